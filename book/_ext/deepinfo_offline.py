"""Keep the built book self-contained: no page refers to a script on the network.

jupyter-book always loads sphinx-thebe, which writes the URL of the thebe bundle on unpkg.com
into every page (fetched only when a reader clicks a launch button; this book has none). The
book is read offline, so the thebe scripts are dropped from every page.
"""

from __future__ import annotations


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    keep = []
    for script in scripts:
        name = str(script)
        body = getattr(script, "attributes", {}).get("body", "") if hasattr(script, "attributes") else ""
        if "thebe" in name or "THEBE_JS_URL" in body:
            continue
        keep.append(script)
    context["script_files"] = keep


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
