"""The `deepinfo` command on files, as a user runs it: outputs, and bad input stopped before any work."""

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepinfo
from deepinfo.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pngs(folder: Path, n=4, size=(48, 40)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_maps_on_torchvision_resnet18_writes_maps_table_and_figures(tmp_path):
    pytest.importorskip("torchvision")
    images, out = _pngs(tmp_path / "imgs", size=(64, 64)), tmp_path / "out"
    rc = main(["maps", "--model", "torchvision:resnet18", "--images", str(images), "--layers", "layer1,layer3",
               "--method", "linear", "--grid", "8", "--out", str(out)])
    assert rc == 0
    maps = deepinfo.InfoMaps.load(out / "maps.pt")
    assert maps.layers == ["layer1", "layer3"] and maps.pixelwise.shape == (2, 4, 8, 8)
    rows = _rows(out / "maps.csv")
    assert len(rows) == 8 and {r["image"] for r in rows} == {f"img{i}.png" for i in range(4)}
    assert [float(r["cid"]) for r in rows[:4]] == pytest.approx(maps.mean()[0].tolist(), rel=1e-5)
    assert sorted(p.name for p in out.glob("*.png")) == [f"img{i}.png" for i in range(4)]


def _module_file(tmp_path: Path) -> Path:
    (tmp_path / "usernets.py").write_text(
        "import torch\n\nfrom deepinfo.models import cifar_resnet\n\n\n"
        "def build():\n    torch.manual_seed(0)  # the same weights at every call\n    return cifar_resnet(8)\n")
    return tmp_path


def test_curve_from_a_module_function_and_the_same_model_saved_whole(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_module_file(tmp_path)))
    images = _pngs(tmp_path / "imgs", n=3)
    args = ["--images", str(images / "*.png"), "--size", "32", "--method", "linear", "--grid", "4"]
    assert main(["curve", "--model", "usernets:build", "--out", str(tmp_path / "a"), *args]) == 0
    rows = _rows(tmp_path / "a" / "curve.csv")
    assert [r["layer"] for r in rows] == ["layer1.0", "layer2.0", "layer3.0"]  # --layers blocks by default
    assert all(float(r["cid_lo"]) <= float(r["cid"]) <= float(r["cid_hi"]) and r["n_images"] == "3" for r in rows)
    assert (tmp_path / "a" / "curve.png").is_file()

    import usernets

    torch.save(usernets.build(), tmp_path / "whole.pt")
    assert main(["curve", "--model", str(tmp_path / "whole.pt"), "--out", str(tmp_path / "b"), *args]) == 0
    assert [r["cid"] for r in _rows(tmp_path / "b" / "curve.csv")] == [r["cid"] for r in rows]


def test_mean_std_wrap_the_model_and_layer_names_stay_the_users(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_module_file(tmp_path)))
    images = _pngs(tmp_path / "imgs", n=2, size=(32, 32))
    out = tmp_path / "out"
    assert main(["maps", "--model", "usernets:build", "--images", str(images), "--layers", "layer2",
                 "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2", "--method", "linear", "--grid", "4",
                 "--out", str(out)]) == 0
    assert [r["layer"] for r in _rows(out / "maps.csv")] == ["layer2", "layer2"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepinfo", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_bad_input_stops_before_any_work_naming_it(tmp_path):
    images = _pngs(tmp_path / "imgs", n=2, size=(32, 32))
    _module_file(tmp_path)
    out = tmp_path / "out"
    r = _cli("maps", "--model", "usernets:build", "--images", str(images), "--layers", "layer1,layer9",
             "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "layer9" in r.stderr and "nearest valid names" in r.stderr, r.stderr
    assert not out.exists()  # nothing computed, nothing written

    (images / "broken.png").write_bytes(b"not a png")
    r = _cli("maps", "--model", "usernets:build", "--images", str(images), "--layers", "layer1", "--out", str(out),
             cwd=tmp_path)
    assert r.returncode == 2 and "cannot read image" in r.stderr and "broken.png" in r.stderr, r.stderr
    (images / "broken.png").unlink()

    r = _cli("maps", "--model", "usernets:nothing", "--images", str(images), "--layers", "layer1", "--out", str(out),
             cwd=tmp_path)
    assert r.returncode == 2 and "no callable 'nothing'" in r.stderr, r.stderr

    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    r = _cli("maps", "--model", str(tmp_path / "state.pt"), "--images", str(images), "--layers", "x", "--out", str(out))
    assert r.returncode == 2 and "state dict" in r.stderr, r.stderr

    _pngs(tmp_path / "mixed", n=1, size=(32, 32))
    Image.new("RGB", (20, 20)).save(tmp_path / "mixed" / "small.png")
    r = _cli("maps", "--model", "usernets:build", "--images", str(tmp_path / "mixed"), "--layers", "layer1",
             "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "--size" in r.stderr, r.stderr


def test_torchscript_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_module_file(tmp_path)))
    import usernets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in recent PyTorch
        torch.jit.save(torch.jit.trace(usernets.build().eval(), torch.rand(1, 3, 32, 32)), tmp_path / "ts.pt")
    images = _pngs(tmp_path / "imgs", n=1, size=(32, 32))
    r = _cli("maps", "--model", str(tmp_path / "ts.pt"), "--images", str(images), "--layers", "layer1",
             "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "TorchScript" in r.stderr and "torch.save(model" in r.stderr, r.stderr
