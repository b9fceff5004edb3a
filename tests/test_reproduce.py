"""deepinfo.book.reproduce, the runner behind `make reproduce` / `make book`, on tiny notebooks.

The notebooks here import nothing heavy, so a papermill run takes a couple of seconds; the book
build itself (Sphinx) is replaced by a stub that records the command (the real build is checked
by `make test`: tests/test_book_browser.py on the book built from the smoke run).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import deepinfo.book.reproduce as rp


def write_notebook(path: Path, code: str = "y = x + 1", params: str = 'profile = "smoke"\nx = 1',
                   n_param_cells: int = 1, title: str | None = None) -> Path:
    nb = new_notebook()
    nb.cells.append(new_markdown_cell(f"# {title or path.stem}\n\nA test page."))
    for _ in range(n_param_cells):
        cell = new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.append(new_code_cell(code))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    """An empty notebooks folder and artifacts root, in place of the repository's."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    monkeypatch.setattr(rp, "NOTEBOOKS", folder)
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path / "artifacts"))
    return folder


def executed(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "artifacts" / "smoke" / "notebooks" / f"{name}.ipynb").read_text())


# ------------------------------------------------------------------------------ parameters


def test_parse_params_reads_literals_and_rejects_bad_items():
    assert rp.parse_params(["n=4", "beta=1.5e-4", "arch=vgg16", "flag=True", "xs=[1, 2]"]) == {
        "n": 4, "beta": 1.5e-4, "arch": "vgg16", "flag": True, "xs": [1, 2]}
    with pytest.raises(SystemExit, match="name=value"):
        rp.parse_params(["n_images"])
    with pytest.raises(SystemExit, match="--profile"):
        rp.parse_params(["profile=cpu"])


def test_unknown_parameter_is_an_error_naming_it_and_the_defined_ones(nbdir):
    write_notebook(nbdir / "01_a.ipynb", params='profile = "smoke"\nn_images = None')
    write_notebook(nbdir / "02_b.ipynb", params='profile = "smoke"\nbeta = 1.0')
    with pytest.raises(SystemExit) as err:
        rp.run("smoke", params={"n_imags": 3})
    msg = str(err.value)
    assert "'n_imags'" in msg and "did you mean 'n_images'" in msg
    assert "beta" in msg and "n_images" in msg
    # nothing ran
    assert not (nbdir.parent / "artifacts" / "smoke" / "notebooks" / "01_a.ipynb").exists()
    # a parameter only some notebooks define goes to those only; one notebook selected: its own cell
    shares = rp.params_per_notebook(rp.notebooks(), {"beta": 2.0})
    assert shares == {nbdir / "01_a.ipynb": {}, nbdir / "02_b.ipynb": {"beta": 2.0}}
    with pytest.raises(SystemExit, match="01_a.ipynb"):
        rp.params_per_notebook([nbdir / "01_a.ipynb"], {"beta": 2.0})


@pytest.mark.parametrize("n_cells", [0, 2])
def test_notebook_without_exactly_one_parameters_cell_is_rejected(nbdir, n_cells):
    write_notebook(nbdir / "01_a.ipynb", n_param_cells=n_cells)
    with pytest.raises(SystemExit, match=f"01_a.ipynb: needs exactly one cell tagged 'parameters'.*found {n_cells}"):
        rp.run("smoke")


def test_parameters_cell_must_define_profile(nbdir):
    write_notebook(nbdir / "01_a.ipynb", params="x = 1")
    with pytest.raises(SystemExit, match="01_a.ipynb: its parameters cell must define `profile`"):
        rp.run("smoke")


def test_declared_parameters_reads_the_defaults(tmp_path):
    path = write_notebook(tmp_path / "a.ipynb", params='profile = "smoke"\nn_images: int | None = None  # all\nbeta = 1e-4')
    assert rp.declared_parameters(path) == {"profile": '"smoke"', "n_images": "None", "beta": "1e-4"}


def test_selection_by_name_or_number_adds_the_scoreboard_last(nbdir):
    for name in ("01_a", "02_b", "99_scoreboard"):
        write_notebook(nbdir / f"{name}.ipynb")
    assert [p.stem for p in rp.notebooks()] == ["01_a", "02_b", "99_scoreboard"]
    assert [p.stem for p in rp.select(["02"])] == ["02_b", "99_scoreboard"]
    assert [p.stem for p in rp.select(["01_a"])] == ["01_a", "99_scoreboard"]
    with pytest.raises(SystemExit, match="no notebook matches"):
        rp.select(["07"])


def test_unknown_profile_fails_before_anything_runs(nbdir):
    write_notebook(nbdir / "01_a.ipynb")
    with pytest.raises(SystemExit, match="unknown profile 'smok'.*did you mean 'smoke'"):
        rp.main(["--profile", "smok", "--no-book"])
    with pytest.raises(SystemExit, match="--book-only runs nothing"):
        rp.main(["--book-only", "-p", "x=2"])


# ------------------------------------------------------------------------------ running


def test_runs_every_selected_notebook_with_its_parameters_and_records_it(nbdir, tmp_path):
    # what is out of date is the workflow's decision (Snakemake): the runner runs what it is given
    nb = write_notebook(nbdir / "01_a.ipynb", code="print(x * 10)")
    assert [t["status"] for t in rp.run("smoke")] == ["ok"]
    assert "10" in json.dumps(executed(tmp_path, "01_a")["cells"][-1]["outputs"])
    assert [t["status"] for t in rp.run("smoke")] == ["ok"]                    # again, unchanged
    assert [t["status"] for t in rp.run("smoke", params={"x": 3})] == ["ok"]
    assert "30" in json.dumps(executed(tmp_path, "01_a")["cells"][-1]["outputs"])
    record = rp.read_record(rp.load_profile("smoke"), nb)
    assert record["status"] == "ok" and record["params"] == {"x": 3} and record["seconds"] > 0
    assert "digest" not in record


def test_failing_notebook_keeps_its_output_and_stops_with_its_path(nbdir, tmp_path):
    write_notebook(nbdir / "01_bad.ipynb", code="print('partial output')\nraise RuntimeError('boom 42')")
    write_notebook(nbdir / "02_next.ipynb")
    with pytest.raises(SystemExit) as err:
        rp.run("smoke")
    target = tmp_path / "artifacts" / "smoke" / "notebooks" / "01_bad.ipynb"
    msg = str(err.value)
    assert "01_bad.ipynb FAILED" in msg and "RuntimeError: boom 42" in msg and str(target) in msg
    kept = json.dumps(json.loads(target.read_text())["cells"][-1]["outputs"])
    assert "partial output" in kept and "boom 42" in kept
    assert not (target.parent / "02_next.ipynb").exists(), "the run stops at the first failure"
    assert rp.read_record(rp.load_profile("smoke"), nbdir / "01_bad.ipynb")["status"] == "failed"
    timings = json.loads((tmp_path / "artifacts" / "smoke" / "timings.json").read_text())
    assert timings["01_bad"]["status"] == "failed"


# ------------------------------------------------------------------------------ the book


@pytest.fixture
def fake_book(nbdir, tmp_path, monkeypatch):
    """A book folder, with the Sphinx build replaced by a stub that writes index.html."""
    book = tmp_path / "book"
    book.mkdir()
    monkeypatch.setattr(rp, "BOOK", book)
    calls = []

    def fake_run(cmd, cwd=None, **kwargs):
        calls.append(cmd)
        (book / "_build" / "html").mkdir(parents=True)
        (book / "_build" / "html" / "index.html").write_text("<html></html>")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(rp.subprocess, "run", fake_run)
    return book, calls


def test_book_has_a_page_per_notebook_placeholders_and_the_run_info(fake_book, nbdir, tmp_path):
    book, calls = fake_book
    write_notebook(nbdir / "01_ran.ipynb", title="The one that ran")
    write_notebook(nbdir / "02_not_run.ipynb", title="Not run yet")
    rp.run("smoke", only=["01"])
    rp.build_book("smoke")

    assert calls and calls[0][-3:] == ["--keep-going", "-W", "-n"]  # warnings are errors
    toc = (book / "_toc.yml").read_text().splitlines()
    assert toc[1:] == ["format: jb-book", "root: intro", "parts:", "- caption: Findings", "  chapters:",
                       "  - file: _generated/notebooks/scoreboard", "- caption: Figures and tables", "  chapters:",
                       "  - file: _generated/notebooks/01_ran", "  - file: _generated/notebooks/02_not_run"]
    gen = book / "_generated"
    page = json.loads((gen / "notebooks" / "01_ran.ipynb").read_text())
    params = [c for c in page["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert "remove-cell" in params[0]["metadata"]["tags"]  # papermill's injected cell shows the values
    placeholder = (gen / "notebooks" / "02_not_run.md").read_text()
    assert placeholder.startswith("# Not run yet") and rp.PLACEHOLDER_CLASS in placeholder
    info = (gen / "run_info.md").read_text()
    assert "Profile **`smoke`**" in info and "synthetic data" in info and "1 of 2" in info
    assert "`02_not_run`" in info
    board = (gen / "notebooks" / "scoreboard.md").read_text()
    assert board.startswith("# Scoreboard") and "No notebook has recorded a claim" in board


def test_scoreboard_page_lists_the_recorded_claims(fake_book, nbdir):
    book, _ = fake_book
    from deepinfo.book.report import Report
    from deepinfo.book.verdicts import Condition, decide

    write_notebook(nbdir / "03_x.ipynb")
    r = Report("03_x", "smoke")
    r.claim("Deeper nets discard | more.", decide([-0.3, -0.2, -0.25, -0.1] * 5, unit="images"),
            rationale="the paper compares depths", setup=[Condition("accuracy", False, "20 %", "~75 %")],
            item="Fig. 5(a)", data="synthetic")
    r.claim("Betas order.", decide([0.3, 0.2, 0.25, 0.1] * 5), rationale="r", setup=[Condition("a", True, "ok")],
            item="Fig. 3(b)", data="synthetic")
    r.claim("Noisy.", decide([0.3, -0.2, 0.25, -0.1]), rationale="r", item="Fig. 6", data="synthetic")
    rp.build_book("smoke")
    board = (book / "_generated" / "notebooks" / "scoreboard.md").read_text()
    assert "1 held, 1 not held, 1 inconclusive" in board
    groups = board.split("## ")[1:]
    assert len(groups) == 3
    assert groups[0].startswith("Evidence about the paper") and "Betas order." in groups[0]
    assert groups[1].startswith("Decided on a setup short") and "| Fig. 5(a) | Deeper nets discard \\| more. | " \
        "**not held** | -0.2125 [" in groups[1]
    assert "not met: accuracy: 20 % vs the paper's ~75 % | [03_x](03_x.md) |" in groups[1]
    assert groups[2].startswith("Inconclusive") and "would decide" in groups[2]
    from deepinfo.paths import artifacts_dir

    recorded = json.loads((artifacts_dir("smoke", "claims") / "03_x.json").read_text())
    assert [c["verdict"] for c in recorded] == ["not held", "held", "inconclusive"]
    for c in recorded:  # the keys the issue names, with their types
        assert c["verdict"] in ("held", "not held", "inconclusive") and isinstance(c["effect"], float)
        assert len(c["interval"]) == 2 and isinstance(c["n_units"], int)
        assert isinstance(c["setup_met"], bool) and isinstance(c["setup"], str)
    assert recorded[0]["setup_met"] is False and "20 %" in recorded[0]["setup"]
    # the front page's summary: the same groups, for the pages that ran
    front = rp._verdicts_markdown(rp.load_profile("smoke"), {"03_x": "03_x.ipynb"})
    assert "**1 held, 1 not held, 1 inconclusive**" in front
    assert front.index("**Evidence about the paper") < front.index("**Decided on a setup short") \
        < front.index("**Inconclusive")
    assert "| {doc}`03_x </_generated/notebooks/03_x>` | Fig. 3(b) | Betas order. | **held** |" in front
    assert "No page has recorded" in rp._verdicts_markdown(rp.load_profile("smoke"), {"03_x": "03_x.md"})
    # claims written by an older version (held/evidence, no verdict) are skipped, saying so
    (artifacts_dir("smoke", "claims") / "01_old.json").write_text(json.dumps([{"held": True, "evidence": "x"}]))
    from deepinfo.book.report import load_claims

    with pytest.warns(UserWarning, match="rerun 01_old"):
        assert [c.notebook for c in load_claims("smoke")] == ["03_x"] * 3


def test_failed_notebook_gets_a_placeholder_page(fake_book, nbdir):
    book, _ = fake_book
    write_notebook(nbdir / "01_bad.ipynb", code="1 / 0")
    with pytest.raises(SystemExit):
        rp.run("smoke")
    rp.build_book("smoke")
    page = (book / "_generated" / "notebooks" / "01_bad.md").read_text()
    assert "last run failed" in page and "artifacts/smoke/notebooks/01_bad.ipynb" in page


def test_set_overrides_profile_keys_for_the_notebooks(nbdir, tmp_path):
    write_notebook(nbdir / "01_a.ipynb", code=(
        "from deepinfo.toolkit.profile import load_profile\n"
        "P = load_profile(profile)\n"
        "print('batch', P.estimator.batch_size, 'maps', P.estimator.n_images.maps, P.name)"))
    rp.main(["--set", "estimator.batch_size=7", "--set", "estimator.n_images.maps=3", "--no-book"])
    text = json.dumps(executed(tmp_path, "01_a")["cells"][-1]["outputs"])
    assert "batch 7 maps 3 smoke" in text
    with pytest.raises(SystemExit, match=r"unknown key 'batch_sise' in \[estimator\]"):
        rp.main(["--set", "estimator.batch_sise=7", "--no-book"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        rp.main(["--set", "estimator.batch_size", "--no-book"])


def test_the_paper_profile_stops_before_any_notebook_without_cuda(nbdir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_notebook(nbdir / "01_a.ipynb")
    with pytest.raises(SystemExit, match="requires CUDA"):
        rp.main(["--profile", "paper", "--no-book"])
    assert not (tmp_path / "artifacts" / "paper" / "notebooks" / "01_a.ipynb").exists()  # nothing ran


def test_each_notebook_logs_its_output_and_records_the_versions(nbdir, tmp_path):
    write_notebook(nbdir / "01_a.ipynb", code="print('hello from the notebook', x)")
    rp.run("smoke")
    log = tmp_path / "artifacts" / "smoke" / "logs" / "01_a.log"
    assert "hello from the notebook 1" in log.read_text()
    record = rp.read_record(rp.load_profile("smoke"), nbdir / "01_a.ipynb")
    import torch

    assert record["environment"]["torch"] == str(torch.__version__)
    text = rp._run_info(rp.load_profile("smoke"), {"01_a": record})
    assert "Software and hardware: torch " in text


def test_each_job_holds_a_gpu_of_its_own(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with rp.gpu_slot(count=1, folder=tmp_path) as slot:
        assert slot is None  # one GPU: nothing to choose
    taken = (tmp_path / "deepinfo-gpu-0.lock").open("w")
    fcntl.flock(taken, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another job holds GPU 0
    with rp.gpu_slot(count=3, folder=tmp_path) as slot:
        assert slot == 1 and __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in __import__("os").environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # a scheduler chose
    with rp.gpu_slot(count=3, folder=tmp_path) as slot:
        assert slot is None
    taken.close()
