"""The workflow (workflow/Snakefile): one job per notebook, then the scoreboard and the book."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepinfo.book.workflow import Workflow

ROOT = Path(__file__).resolve().parent.parent


def test_workflow_names_its_inputs_outputs_and_gpu_need(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    w = Workflow("smoke")
    assert w.profile_file.endswith("profiles/smoke.toml") and w.gpus == 0
    assert "deepinfo/estimators.py" in w.code and "deepinfo/toolkit/profiles/cpu.toml" in w.code
    assert w.done("02_layer_curves").endswith("smoke/notebooks/02_layer_curves.done")
    assert w.select(["02", "05"]) == ["02_layer_curves", "05_concentration_accuracy"]
    assert len(w.select([])) == 16 and w.scoreboard == "scoreboard"
    assert Workflow("paper").gpus == 1  # one GPU per job: JOBS beyond the GPUs wait
    over = Workflow("smoke", ("estimator.batch_size=4",))
    assert Path(over.profile_arg).name == "profile-overrides.toml"
    before = Path(over.profile_arg).stat().st_mtime_ns
    Workflow("smoke", ("estimator.batch_size=4",))  # the same overrides: the file is not rewritten
    assert Path(over.profile_arg).stat().st_mtime_ns == before


@pytest.mark.skipif(shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None,
                    reason="snakemake not installed in this environment")
def test_the_dag_has_a_job_per_notebook_then_the_scoreboard_and_the_book(tmp_path):
    snakemake = str(Path(sys.executable).parent / "snakemake")
    env = {"DEEPINFO_ARTIFACTS": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([snakemake, "-s", "workflow/Snakefile", "--cores", "2", "--dry-run", "--config",
                          "profile=smoke", "only=02 05"], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout[out.stdout.index("Job stats"):]
    counts = {line.split()[0]: int(line.split()[1]) for line in table.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["notebook"] == 2 and counts["scoreboard"] == 1 and counts["book"] == 1


@pytest.mark.skipif(shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None,
                    reason="snakemake not installed in this environment")
@pytest.mark.parametrize("cores, jobs, threads", [(4, 2, 2), (4, 1, 4), (2, 2, 1)])
def test_each_job_gets_its_share_of_the_cores(tmp_path, cores, jobs, threads):
    # Snakemake passes a job's threads to torch as OMP_NUM_THREADS: JOBS=1 must not run on one core
    snakemake = str(Path(sys.executable).parent / "snakemake")
    out = subprocess.run([snakemake, "-s", "workflow/Snakefile", "--cores", str(cores), "--dry-run",
                          "--resources", f"slots={jobs}", "--config", "profile=smoke", "only=03", f"jobs={jobs}"],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, "DEEPINFO_ARTIFACTS": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert {int(x) for x in re.findall(r"\((\d+) threads", out.stdout)} == {threads}
