"""Run the book's notebooks with papermill for one profile, then build the book.

    python -m deepinfo.book.reproduce --profile smoke          # what `make reproduce` does
    python -m deepinfo.book.reproduce --profile cpu -p n_images=4 --only 02_layer_curves
    python -m deepinfo.book.reproduce --profile smoke --book-only   # `make book`

Parameters (``-p name=value``, the value read as a Python literal, else as a string) go to the
notebooks whose ``parameters`` cell defines them; a parameter that no selected notebook defines
(a misspelling) is an error that names the defined ones, before anything runs.

Every selected notebook runs: which ones are out of date, what runs side by side and which
networks are trained first is the workflow's job (``make reproduce``, ``workflow/Snakefile``),
which calls this runner once per notebook (``--exactly``). A failing notebook keeps its executed
output, error included, under ``artifacts/<profile>/notebooks/`` and stops the run with a message
saying where. The scoreboard notebook (``scoreboard`` or ``NN_scoreboard``) runs last, because it
reads every other notebook's claims.

The book (``book/``, Jupyter Book 1.x) is built from what has run: the executed notebooks are
copied into ``book/_generated/``, a notebook that has not run (or failed) gets a placeholder
page, ``book/_toc.yml`` is written, and ``jupyter-book build -W -n --keep-going`` builds
``book/_build/html`` offline, warnings as errors.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from deepinfo.paths import artifacts_dir, repo_root
from deepinfo.toolkit.environment import describe, versions
from deepinfo.toolkit.profile import Profile, load_profile, override_text

NOTEBOOKS = repo_root() / "notebooks"
BOOK = repo_root() / "book"
SCOREBOARD = "scoreboard"  # runs last (it reads every other notebook's claims), shown first
GENERATED = "_generated"  # book/_generated: everything the runner writes into the book
SCOREBOARD_PAGE = f"{GENERATED}/notebooks/{SCOREBOARD}"  # its docname in the book, whatever the notebook's name
PLACEHOLDER_CLASS = "deepinfo-not-run"  # HTML class of a placeholder page's note (the browser test looks for it)


class ReproduceError(SystemExit):
    """A run that cannot start or that stopped; the message says why (exit status 1)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------------------
# Notebooks and their parameters
# --------------------------------------------------------------------------------------------


#: Written beside the built book's index.html: the profile and each notebook's status.
BUILD_RECORD = "deepinfo-book.json"


def is_scoreboard(nb: Path) -> bool:
    return nb.stem == SCOREBOARD or nb.stem.endswith("_" + SCOREBOARD)


def notebooks() -> list[Path]:
    """The book's notebooks (``NOTEBOOKS/*.ipynb``, not ``_*``) in run order, the scoreboard last."""
    found = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    return sorted(found, key=is_scoreboard)


def declared_parameters(path: Path) -> dict[str, str]:
    """Names assigned in the notebook's one cell tagged ``parameters``, with their default's source.

    Raises:
        ValueError: not exactly one cell tagged ``parameters``, or that cell is not valid Python.
    """
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(
            f"{path.name}: needs exactly one cell tagged 'parameters' (papermill injects the run's "
            f"values after it), found {len(cells)}"
        )
    src = _source(cells[0])
    try:
        body = ast.parse(src).body
    except SyntaxError as exc:
        raise ValueError(f"{path.name}: its parameters cell is not valid Python: {exc}") from None
    names = {}
    for node in body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    names[t.id] = ast.get_source_segment(src, node.value) if node.value else ""
    return names


def parse_params(items: list[str]) -> dict:
    """``["n_images=4", "arch=vgg16"]`` -> ``{"n_images": 4, "arch": "vgg16"}`` (literals where they parse)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ReproduceError(f"parameter {item!r} must look like name=value (name a Python identifier)")
        if name == "profile":
            raise ReproduceError("the profile is not a -p parameter: use --profile (make reproduce PROFILE=...)")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def params_per_notebook(selected: list[Path], params: dict) -> dict[Path, dict]:
    """Each notebook's share of ``params`` (those its parameters cell defines).

    Raises:
        ReproduceError: a notebook without exactly one parameters cell or without ``profile``, or
            a parameter that no selected notebook defines (the message lists the defined ones).
    """
    declared = {}
    for nb in selected:
        try:
            declared[nb] = declared_parameters(nb)
        except ValueError as exc:
            raise ReproduceError(str(exc)) from None
        if "profile" not in declared[nb]:
            raise ReproduceError(f"{nb.name}: its parameters cell must define `profile` (e.g. profile = \"smoke\")")
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(params) - known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        where = selected[0].name if len(selected) == 1 else f"any of the {len(selected)} selected notebooks"
        raise ReproduceError(
            f"unknown parameter(s) {', '.join(hints)}: not defined in the parameters cell of {where}; "
            f"defined there: {', '.join(sorted(known - {'profile'})) or '(only profile)'} "
            f"(the profile is chosen with --profile)"
        )
    return {nb: {k: v for k, v in params.items() if k in declared[nb]} for nb in selected}


# --------------------------------------------------------------------------------------------
# Run records
# --------------------------------------------------------------------------------------------


def _record_path(out_dir: Path, nb: Path) -> Path:
    return out_dir / f"{nb.stem}.run.json"


def read_record(prof: Profile, nb: Path) -> dict | None:
    """The record of a notebook's last run in this profile (status, params, seconds, versions), if any."""
    path = _record_path(artifacts_dir(prof.artifacts, "notebooks", create=False), nb)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def select(only: list[str] | None, scoreboard: bool = True) -> list[Path]:
    """The notebooks to run: all, or those named (stem or number prefix) plus the scoreboard
    (unless ``scoreboard`` is False: a workflow job runs exactly one notebook)."""
    every = notebooks()
    if not only:
        return every
    wanted = [nb for nb in every if nb.stem in only or nb.stem.split("_")[0] in only]
    if not wanted:
        raise ReproduceError(f"no notebook matches {only}; notebooks: {[p.stem for p in every]}")
    board = [nb for nb in every if is_scoreboard(nb) and nb not in wanted] if scoreboard else []
    return wanted + board


def write_overrides(base: Profile, profile: str, sets: list[str]) -> Path:
    """``artifacts/<profile>/profile-overrides.toml``: ``profile`` with the dotted ``sets``. Rewritten
    only when its text changes (a workflow reruns the jobs whose inputs are newer than their outputs)."""
    path = artifacts_dir(base.artifacts) / "profile-overrides.toml"
    text = override_text(_profile_argument(profile), sets)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _profile_argument(profile: str) -> str:
    """The value of the notebooks' ``profile`` parameter (kernels run in NOTEBOOKS: paths made absolute)."""
    path = Path(profile).expanduser()
    return str(path.resolve()) if path.suffix == ".toml" and path.is_file() else profile


def gpu_count() -> int:
    """GPUs on this machine, from ``nvidia-smi -L``: asking torch would initialise CUDA in this
    process before :func:`gpu_slot` chose the device it may see."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    out = subprocess.run([exe, "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


@contextlib.contextmanager
def gpu_slot(count: int | None = None, folder: Path | None = None):
    """Hold one of the machine's GPUs for one notebook: the first whose lock file
    (``<tmp>/deepinfo-gpu-<i>.lock``, fcntl) is free, exported as ``CUDA_VISIBLE_DEVICES`` to the
    notebook's kernel, so that jobs run side by side (``make reproduce JOBS=4``) get a GPU each.
    Yields the index, or None (nothing pinned) with fewer than 2 GPUs or when a scheduler (SLURM)
    already set ``CUDA_VISIBLE_DEVICES``. With every GPU taken it waits for one."""
    import fcntl

    if count is None:
        count = gpu_count()
    if count < 2 or os.environ.get("CUDA_VISIBLE_DEVICES"):
        yield None
        return
    folder = Path(folder or tempfile.gettempdir())
    while True:
        for i in range(count):
            handle = (folder / f"deepinfo-gpu-{i}.lock").open("w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i)
            try:
                yield i
            finally:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(5)


def run(profile: str, only: list[str] | None = None, params: dict | None = None,
        scoreboard: bool = True) -> list[dict]:
    """Execute the selected notebooks of ``profile`` with papermill, one after another.

    Returns one ``{"notebook", "seconds", "status"}`` per notebook.

    Raises:
        ReproduceError: bad parameters or notebooks (before anything runs), or a notebook failed
            (its executed output, with the error, is kept; the message gives its path).
    """
    prof = load_profile(profile)
    selected = select(only, scoreboard)
    shares = params_per_notebook(selected, params or {})
    out_dir = artifacts_dir(prof.artifacts, "notebooks")
    logs = artifacts_dir(prof.artifacts, "logs")
    for name in sorted(params or {}):
        users = [nb.stem for nb in selected if name in shares[nb]]
        if len(users) < len(selected):
            print(f"  parameter {name!r} goes to {len(users)} of {len(selected)} notebooks: {', '.join(users)}")
    import papermill  # only when something may run (building the book does not need it)

    timings = []
    for nb in selected:
        target = out_dir / nb.name
        record_path = _record_path(out_dir, nb)
        record = {"status": "running", "params": shares[nb], "profile": prof.name,
                  "started": _now(), "environment": versions()}
        record_path.write_text(json.dumps(record, indent=2, default=repr))
        log_path = logs / f"{nb.stem}.log"
        print(f"  {nb.stem:<30} running ... (log: {log_path})", flush=True)
        start = time.perf_counter()
        try:
            with log_path.open("w") as log, gpu_slot():  # its output streamed as it runs; a GPU of its own
                papermill.execute_notebook(
                    str(nb), str(target), parameters={"profile": _profile_argument(profile), **shares[nb]},
                    kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False, report_mode=False,
                    log_output=False, stdout_file=log, stderr_file=log,
                )
        except BaseException as exc:  # papermill has written the partial output, error included
            seconds = round(time.perf_counter() - start, 1)
            record.update(status="failed", seconds=seconds, finished=_now(), error=_describe(exc))
            record_path.write_text(json.dumps(record, indent=2, default=repr))
            timings.append({"notebook": nb.stem, "seconds": seconds, "status": "failed"})
            _write_timings(prof, timings)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ReproduceError(
                f"\n{nb.name} FAILED after {seconds:.0f} s in profile {prof.name!r}: {_describe(exc)}\n"
                f"The executed notebook, with its error, is kept at {target}; its output: {log_path}\n"
                f"Fix it and rerun it (make reproduce reruns only what failed or changed)."
            ) from None
        seconds = round(time.perf_counter() - start, 1)
        record.update(status="ok", seconds=seconds, finished=_now())
        record_path.write_text(json.dumps(record, indent=2, default=repr))
        timings.append({"notebook": nb.stem, "seconds": seconds, "status": "ok"})
        print(f"  {nb.stem:<30} done in {seconds:.0f} s", flush=True)
    _write_timings(prof, timings)
    return timings


def _describe(exc: BaseException) -> str:
    """One line: papermill's cell error (name and value) or the exception's last line."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        cell = getattr(exc, "exec_count", None)
        return f"{ename}: {evalue}" + (f" (cell [{cell}])" if cell is not None else "")
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_timings(prof: Profile, timings: list[dict]) -> None:
    path = artifacts_dir(prof.artifacts) / "timings.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    for t in timings:
        if t["status"] != "skipped":
            old[t["notebook"]] = t
    path.write_text(json.dumps(old, indent=2))


# --------------------------------------------------------------------------------------------
# The book
# --------------------------------------------------------------------------------------------


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _title(nb: Path) -> str:
    data = json.loads(nb.read_text(encoding="utf-8"))
    for cell in data["cells"]:
        if cell["cell_type"] == "markdown":
            for line in _source(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return nb.stem


def _book_notebook(src: Path, dst: Path) -> None:
    """Copy an executed notebook into the book, hiding what only the runner needs to see."""
    data = json.loads(src.read_text(encoding="utf-8"))
    injected = any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in data["cells"])
    for cell in data["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        # the defaults are superseded by papermill's injected cell, which shows the run's values
        if "parameters" in tags and injected and "remove-cell" not in tags:
            tags.append("remove-cell")
        # the run's values, folded like every code cell (the front page names the profile)
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
    dst.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _scoreboard_markdown(prof: Profile, pages: dict[str, str], note: str) -> str:
    """The findings scoreboard written from the recorded claims (when no scoreboard notebook ran)."""
    from deepinfo.book.report import load_claims, scoreboard_groups

    claims = load_claims(prof.artifacts)
    lines = ["# Scoreboard", "", note, ""]
    if not claims:
        lines.append(f"No notebook has recorded a claim in profile `{prof.name}` yet.")
        return "\n".join(lines) + "\n"
    counts = {v: sum(c.verdict == v for c in claims) for v in ("held", "not held", "inconclusive")}
    lines += [f"In profile `{prof.name}`: **{counts['held']} held, {counts['not held']} not held, "
              f"{counts['inconclusive']} inconclusive** of {len(claims)} claims.", ""]
    for title, group in scoreboard_groups(claims):
        if not group:
            continue
        lines += [f"## {title}", "", "| paper item | claim | verdict | effect [interval] | setup | page |",
                  "|---|---|---|---|---|---|"]
        for c in group:
            page = f"[{c.notebook}]({pages[c.notebook]})" if c.notebook in pages else c.notebook
            lines.append(f"| {_md_cell(c.item)} | {_md_cell(c.claim)} | **{c.verdict}** | "
                         f"{_md_cell(c.effect_text())} | {_md_cell(c.setup_text())} | {page} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _verdicts_markdown(prof: Profile, pages: dict[str, str]) -> str:
    """The front page's summary of the verdicts: one compact table per scoreboard group."""
    from deepinfo.book.report import load_claims, scoreboard_groups

    ran = {stem for stem, page in pages.items() if page.endswith(".ipynb")}
    claims = [c for c in load_claims(prof.artifacts) if c.notebook in ran]
    if not claims:
        return f"No page has recorded a claim in profile `{prof.name}` yet.\n"
    counts = {v: sum(c.verdict == v for c in claims) for v in ("held", "not held", "inconclusive")}
    lines = [f"In profile `{prof.name}`, of {len(claims)} claims **{counts['held']} held, {counts['not held']} "
             f"not held, {counts['inconclusive']} inconclusive** (95 % bootstrap intervals over the units "
             "named; the {doc}`scoreboard </_generated/notebooks/scoreboard>` gives each rule and its reasons).",
             ""]
    for title, group in scoreboard_groups(claims):
        if not group:
            continue
        lines += [f"**{title}** ({len(group)})", "", "| page | paper item | claim | verdict | effect [interval] | setup |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {{doc}}`{c.notebook} </_generated/notebooks/{c.notebook}>` | {_md_cell(c.item)} | "
                  f"{_md_cell(textwrap.shorten(c.claim, 110, placeholder=' ...'))} | "
                  f"**{c.verdict}** | {_md_cell(c.effect_text())} | {_md_cell(c.setup_text(brief=True))} |"
                  for c in group]
        lines.append("")
    return "\n".join(lines) + "\n"


def _run_info(prof: Profile, records: dict[str, dict | None]) -> str:
    """The front page's box: profile, data, parameters, what ran (an {include} of book/intro.md)."""
    d = prof.data
    sets = (f"small-image classification: `{d.cifar.dataset}`, birds: `{d.cub.dataset}`, "
            f"segmentation: `{d.segmentation.dataset}`, damage negatives: `{prof.damage.negatives}`")
    if prof.needs_data:
        data = (f"{sets}; read from `{prof.data_root()}`"
                + ("" if d.download else ", nothing downloaded"))
    else:
        data = f"synthetic only, generated on the fly, nothing read or downloaded ({sets})"
    ran = {k: r for k, r in records.items() if r and r.get("status") == "ok"}
    params = sorted({f"{k}={v!r}" for r in ran.values() for k, v in r.get("params", {}).items()})
    seconds = sum(r.get("seconds", 0.0) for r in ran.values())
    missing = [k for k, r in records.items() if not r or r.get("status") != "ok"]
    lines = [
        "```{admonition} How this book was produced",
        ":class: note",
        f"Profile **`{prof.name}`**: {prof.description}",
        "",
        f"Data: {data}.",
        "",
        f"Notebooks executed in this profile: {len(ran)} of {len(records)}, "
        f"{seconds / 60:.1f} minutes of run time in all"
        + (f"; parameters: {', '.join(f'`{p}`' for p in params)}" if params else "; no parameter overrides")
        + ". Book built " + _dt.date.today().isoformat() + ".",
    ]
    envs = sorted({describe(r["environment"]) for r in ran.values() if r.get("environment")})
    if envs:
        lines += ["", "Software and hardware: " + " | ".join(envs) + "."]
    if missing:
        lines += ["", "Not (successfully) run yet, shown as placeholder pages: "
                  + ", ".join(f"`{m}`" for m in missing) + "."]
    if prof.name == "smoke":
        lines += ["", "**Smoke results prove the pipeline on synthetic data and tiny networks; their "
                  "verdicts say nothing about the paper.** `make reproduce PROFILE=cpu` (real data) "
                  "or `PROFILE=paper` (GPU) produce the results that do."]
    lines.append("```")
    return "\n".join(lines) + "\n"


def build_book(profile: str, strict: bool = True) -> Path:
    """Build the book from the notebooks of ``profile`` that have run; returns ``book/_build/html``.

    Raises:
        ReproduceError: the build failed (with ``strict``, any Sphinx warning fails it).
    """
    prof = load_profile(profile)
    executed = artifacts_dir(prof.artifacts, "notebooks", create=False)
    gen = BOOK / GENERATED
    shutil.rmtree(gen, ignore_errors=True)
    (gen / "notebooks").mkdir(parents=True)
    chapters, pages, records, board = [], {}, {}, None
    for nb in notebooks():
        record = records[nb.stem] = read_record(prof, nb)
        done = executed / nb.name
        ok = done.is_file() and record is not None and record.get("status") == "ok"
        if is_scoreboard(nb):
            board = (nb, ok, done)
            continue
        if ok:
            _book_notebook(done, gen / "notebooks" / nb.name)
            pages[nb.stem] = nb.name
        else:
            status = record.get("status") if record else None
            kept = f"`artifacts/{prof.artifacts}/notebooks/{nb.name}`"
            why = {"failed": f"its last run failed: the executed notebook, with its error, is kept at {kept}",
                   "running": f"its last run did not finish (interrupted, or still running); its output so far is {kept}",
                   }.get(status, "it has not run yet")
            (gen / "notebooks" / f"{nb.stem}.md").write_text(
                f"# {_title(nb)}\n\n```{{admonition}} Not run\n:class: warning {PLACEHOLDER_CLASS}\n"
                f"No results in profile `{prof.name}`: {why}. `make reproduce PROFILE={prof.name}` "
                f"runs it.\n```\n", encoding="utf-8")
            pages[nb.stem] = f"{nb.stem}.md"
        chapters.append(f"{GENERATED}/notebooks/{nb.stem}")
    # The scoreboard lives at a stable name (the front page links to it), beside the pages it
    # links to (its links are relative: "<notebook>.html").
    if board and board[1]:
        _book_notebook(board[2], gen / "notebooks" / f"{SCOREBOARD}.ipynb")
    else:
        note = ("Collected by the runner from the claims the notebooks recorded"
                + (" (the scoreboard notebook has not run in this profile)." if board else "."))
        (gen / "notebooks" / f"{SCOREBOARD}.md").write_text(_scoreboard_markdown(prof, pages, note), encoding="utf-8")
    (gen / "run_info.md").write_text(_run_info(prof, records), encoding="utf-8")
    (gen / "verdicts.md").write_text(_verdicts_markdown(prof, pages), encoding="utf-8")
    toc = ["# Written by deepinfo.book.reproduce (python -m deepinfo.book.reproduce --book-only); do not edit.",
           "format: jb-book", "root: intro", "parts:", "- caption: Findings", "  chapters:",
           f"  - file: {SCOREBOARD_PAGE}"]
    if chapters:
        toc += ["- caption: Figures and tables", "  chapters:"] + [f"  - file: {c}" for c in chapters]
    (BOOK / "_toc.yml").write_text("\n".join(toc) + "\n")
    html = BOOK / "_build" / "html"
    shutil.rmtree(BOOK / "_build", ignore_errors=True)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(BOOK), "--keep-going"]
    if strict:
        cmd += ["-W", "-n"]
    print(f"  building the book from profile {prof.name!r}: jupyter-book build book {' '.join(cmd[5:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo_root())
    if proc.returncode != 0 or not (html / "index.html").is_file():
        raise ReproduceError("the book build failed (warnings are errors); see the output above")
    print(f"  book built in {time.perf_counter() - start:.0f} s: {html / 'index.html'}")
    # what the book was built from, for `make publish` (which refuses a smoke book or failed pages)
    (html / BUILD_RECORD).write_text(json.dumps({
        "profile": prof.name, "built": _now(),
        "notebooks": {k: (r or {}).get("status", "not run") for k, r in records.items()}}, indent=2) + "\n")
    return html


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m deepinfo.book.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke", help="smoke (default), cpu, paper or a .toml path")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a notebook parameter, for the notebooks that define it (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="override a profile key, dotted (estimator.batch_size=64; repeatable)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebook names or number prefixes to run")
    ap.add_argument("--exactly", metavar="NAME", help="run this one notebook and nothing else: no scoreboard, "
                    "no book (a job of the workflow, workflow/Snakefile, which decides what is up to date)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--no-book", action="store_true", help="run the notebooks, do not build the book")
    group.add_argument("--book-only", action="store_true", help="build the book from what has run")
    args = ap.parse_args(argv)
    try:
        base = load_profile(args.profile)  # an unknown profile fails here, before anything runs
        if args.sets:  # the run's profile: the base with the overrides, kept beside its artifacts
            path = write_overrides(base, args.profile, args.sets)
            load_profile(path)
            print(f"deepinfo: profile {base.name!r} with {', '.join(args.sets)} ({path})")
            args.profile = str(path)
    except ValueError as exc:
        raise ReproduceError(str(exc)) from None
    try:
        load_profile(args.profile).torch_device()  # a profile that needs a GPU fails here, saying why
    except RuntimeError as exc:
        raise ReproduceError(str(exc)) from None
    params = parse_params(args.param)
    if args.exactly:
        if args.only or args.book_only:
            raise ReproduceError("--exactly runs one notebook: --only and --book-only do not apply")
        run(args.profile, [args.exactly], params, scoreboard=False)
        return
    if args.book_only and (params or args.only):
        raise ReproduceError("--book-only runs nothing: -p and --only do not apply")
    if not args.book_only:
        print(f"deepinfo: {len(notebooks())} notebooks, profile {args.profile!r}", flush=True)
        run(args.profile, args.only, params)
    if not args.no_book:
        build_book(args.profile)


if __name__ == "__main__":
    main()
