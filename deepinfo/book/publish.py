"""``make publish``: the built book of a profile onto the repository's ``gh-pages`` branch.

As Jupyter Book documents it, with ghp-import: the HTML of ``book/_build/html`` becomes the only
content of the ``gh-pages`` branch (one commit, ``.nojekyll`` added). Pushing stays the user's
choice (``PUSH=1`` pushes to ``origin``). A book built from the smoke profile (synthetic data:
its verdicts say nothing about the paper), from another profile than the one asked for, or whose
run left notebooks failed or not run, is refused unless asked for explicitly.
"""

from __future__ import annotations

import argparse
import json
import sys

from deepinfo.book.reproduce import BOOK, BUILD_RECORD, ReproduceError

__all__ = ["publish", "main"]


def publish(profile: str, *, allow_smoke: bool = False, allow_incomplete: bool = False, push: bool = False,
            branch: str = "gh-pages") -> str:
    """Commit the built book of ``profile`` to ``branch`` of the repository in the working directory.

    Returns the commit message. Raises :class:`~deepinfo.book.reproduce.ReproduceError` when
    the book is missing or not publishable (see the module's docstring).
    """
    from ghp_import import ghp_import

    html = BOOK / "_build" / "html"
    record_path = html / BUILD_RECORD
    if not record_path.is_file():
        raise ReproduceError(f"no built book at {html} (or one built before {BUILD_RECORD} existed): "
                             f"`make reproduce PROFILE={profile}` or `make book PROFILE={profile}` first")
    record = json.loads(record_path.read_text())
    built = record.get("profile")
    if built != profile:
        raise ReproduceError(f"the book at {html} was built from profile {built!r}, not {profile!r}: "
                             f"`make book PROFILE={profile}` first")
    if built == "smoke" and not allow_smoke:
        raise ReproduceError("this book was built from the smoke profile (synthetic data, tiny networks: its "
                             "verdicts say nothing about the paper); publish it anyway with ALLOW_SMOKE=1")
    bad = {k: v for k, v in record.get("notebooks", {}).items() if v != "ok"}
    if bad and not allow_incomplete:
        raise ReproduceError(f"{len(bad)} notebooks of this book did not run successfully "
                             f"({', '.join(f'{k}: {v}' for k, v in bad.items())}); publish it anyway with "
                             "ALLOW_INCOMPLETE=1")
    message = f"deepinfo book, profile {built}, built {record.get('built')}"
    ghp_import(str(html), mesg=message, branch=branch, nojekyll=True, push=push, no_history=True)
    return message


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepinfo.book.publish", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--allow-smoke", action="store_true")
    ap.add_argument("--allow-incomplete", action="store_true")
    ap.add_argument("--push", action="store_true", help="push the branch to origin (default: commit only)")
    args = ap.parse_args(argv)
    message = publish(args.profile, allow_smoke=args.allow_smoke, allow_incomplete=args.allow_incomplete,
                      push=args.push)
    print(f"gh-pages: {message}" + ("; pushed to origin" if args.push else "; not pushed (git push origin gh-pages)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
