"""deepinfo.book.networks: the shared networks as jobs of their own, declared per page."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from deepinfo.book import networks
from deepinfo.book.reproduce import is_scoreboard, notebooks
from deepinfo.toolkit.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent

# the experiments.py builder a page calls -> the kind of shared artifact it reads
DIRECT = {"cifar_resnet_model": "cifar_resnet", "cifar_autoencoder_model": "cifar_autoencoder",
          "cub_model": "cub", "compressed_models": "cub_compressed", "cifar_compressed_models": "cifar_compressed"}
# builders that read a shared artifact inside (a page calling them may declare that kind)
THROUGH = {"cifar_distillation_models": {"cifar_resnet"}, "compressed_models": {"cub"},
           "cifar_compressed_models": {"cifar_resnet"}, "trained_decoder": {"cifar_decoders"}}


def _source(page: str) -> str:
    """The notebook's code and its page module's (deepinfo/book/pages/pNN_*.py), if it has one."""
    nb = nbformat.read(ROOT / "notebooks" / f"{page}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    module = ROOT / "deepinfo" / "book" / "pages" / f"p{page}.py"
    return text + (module.read_text() if module.is_file() else "")


def _called(source: str) -> set[str]:
    return {name for name in set(DIRECT) | set(THROUGH) if re.search(rf"(?<![\w]){name}\(", source)}


@pytest.mark.parametrize("page", [nb.stem for nb in notebooks() if not is_scoreboard(nb)])
def test_each_page_declares_the_shared_networks_it_reads(page):
    called = _called(_source(page))
    declared = set(networks.USES.get(page, ()))
    missing = {DIRECT[b] for b in called if b in DIRECT} - declared
    assert not missing, f"{page} trains {missing} itself: declare them in networks.USES so it waits for their jobs"
    readable = {DIRECT[b] for b in called if b in DIRECT}.union(*(THROUGH[b] for b in called if b in THROUGH))
    assert declared <= readable, f"{page} waits for {declared - readable}, which it never reads"


def test_the_declaration_check_can_fail():
    assert _called("x = ex.cub_model(P, arch)\nm = cifar_compressed_models(P)") == {"cub_model",
                                                                                   "cifar_compressed_models"}
    assert _called("my_cub_model(P)") == set()


def test_shared_networks_of_a_profile_and_their_order():
    p = load_profile("smoke")
    items = networks.shared(p)
    depths = set(p.networks.cifar.depths) | {p.second_line.base_depth, p.second_line.teacher_depth}
    assert {n for n, s in items.items() if s.kind == "cifar_resnet"} == {f"resnet{d}" for d in depths}
    assert {n for n, s in items.items() if s.kind == "cub"} == {f"cub-{a}" for a in
                                                                {*p.networks.cub.archs, p.compression.arch}}
    assert items[f"resnet{p.networks.cifar.depths[0]}-ae-decoders"].after == (f"resnet{p.networks.cifar.depths[0]}-ae",)
    assert items["cub-compressed"].after == (f"cub-{p.compression.arch}",)
    for s in items.values():  # everything a job is built from is a job too
        assert set(s.after) <= set(items)
    assert networks.needed_by(p, "03_beta") == [f"resnet{d}" for d in dict.fromkeys(
        [*p.networks.cifar.depths, p.second_line.base_depth, p.second_line.teacher_depth])]
    assert networks.needed_by(p, "15_unet") == []


def test_the_command_lists_the_jobs_and_rejects_an_unknown_name(capsys):
    networks.main(["--profile", "smoke"])
    assert "resnet20-decoders" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no shared artifact .*resnet21.* there are: resnet20"):
        networks.main(["--profile", "smoke", "resnet21"])


@pytest.mark.skipif(shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None,
                    reason="snakemake not installed in this environment")
def test_a_page_waits_for_the_jobs_of_the_networks_it_reads(tmp_path):
    snakemake = str(Path(sys.executable).parent / "snakemake")
    out = subprocess.run([snakemake, "-s", "workflow/Snakefile", "--cores", "2", "--dry-run", "--config",
                          "profile=smoke", "only=03 15"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "DEEPINFO_ARTIFACTS": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout[out.stdout.index("Job stats"):]
    counts = {line.split()[0]: int(line.split()[1]) for line in table.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["network"] == len(networks.needed_by("smoke", "03_beta")) and counts["notebook"] == 2
