"""deepinfo.toolkit.data: what a profile reads, verified against recorded or published checksums."""

import json
import shutil

import pytest

from deepinfo.toolkit import data as D


def _tree(root):
    (root / "isbi2012").mkdir(parents=True)
    for name in ("train-volume.tif", "train-labels.tif", "test-volume.tif"):
        (root / "isbi2012" / name).write_bytes(name.encode() * 10)
    for split in ("train", "test"):
        for cls in ("airplane", "bird"):
            folder = root / "cifar10" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i:04d}.jpg").write_bytes(f"{split}{cls}{i}".encode())


def test_folder_digests_name_the_folder_or_file_that_changed(tmp_path):
    _tree(tmp_path)
    before = D.folder_digests(tmp_path / "cifar10", 2)
    assert set(before) == {"train/airplane", "train/bird", "test/airplane", "test/bird"}
    assert before["train/bird"][0] == 3
    (tmp_path / "cifar10" / "train" / "bird" / "0001.jpg").write_bytes(b"flipped")
    after = D.folder_digests(tmp_path / "cifar10", 2)
    assert [k for k in before if before[k] != after[k]] == ["train/bird"]
    assert set(D.folder_digests(tmp_path / "isbi2012", 0)) == {"train-volume.tif", "train-labels.tif",
                                                               "test-volume.tif"}


def test_check_verifies_the_offline_copies_and_rejects_a_corrupted_one(tmp_path, monkeypatch):
    _tree(tmp_path / "data")
    manifest = tmp_path / "manifest.json"
    monkeypatch.setattr(D, "MANIFEST", manifest)
    monkeypatch.setattr(D, "OFFLINE", {"cifar10-jpeg": ("cifar10", 2), "isbi2012": ("isbi2012", 0)})
    monkeypatch.setenv("DEEPINFO_DATA", str(tmp_path / "data"))
    assert D.main(["--profile", "cpu", "--record-manifest"]) == 0
    assert set(json.loads(manifest.read_text())) == {"cifar10-jpeg", "isbi2012"}
    checked = {item.name: problem for item, problem in D.check("cpu")}
    assert checked["cifar10-jpeg"] is None and checked["isbi2012"] is None
    assert checked["cub200-classes1-50"].startswith("no recorded checksums")  # not in this manifest
    assert checked["resnet20-cifar10"].startswith("missing")
    (tmp_path / "data" / "isbi2012" / "train-labels.tif").write_bytes(b"truncated")
    shutil.rmtree(tmp_path / "data" / "cifar10" / "test" / "bird")
    checked = {item.name: problem for item, problem in D.check("cpu")}
    assert "corrupted" in checked["isbi2012"] and "train-labels.tif" in checked["isbi2012"]
    assert "corrupted" in checked["cifar10-jpeg"] and "test/bird" in checked["cifar10-jpeg"]
    assert D.main(["--profile", "cpu"]) == 1


def test_what_each_profile_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_DATA", str(tmp_path))
    assert D.items("smoke") == []
    cpu = [i.name for i in D.items("cpu")]
    assert cpu[0] == "cifar10-jpeg" and "cub200-classes1-50" in cpu and "isbi2012" in cpu
    assert {"resnet20-cifar10", "resnet56-cifar10"} <= set(cpu)
    paper = {i.name: i for i in D.items("paper")}
    assert "cifar10" in paper and "cifar10-jpeg" not in paper  # the official images only
    assert "cub200" in paper and paper["cub200"].fetch is not None
    assert any(n.endswith("-imagenet") for n in paper)
    assert paper["isbi2012"].fetch is None  # placed by hand


def test_the_real_offline_copies_are_intact(shared_data, monkeypatch):
    monkeypatch.setenv("DEEPINFO_DATA", str(shared_data))
    problems = {item.name: problem for item, problem in D.check("cpu") if problem}
    assert not problems, problems


def test_the_paper_profile_never_reads_the_jpeg_copy(shared_data):
    from deepinfo.datasets import cifar10

    with pytest.raises(FileNotFoundError):
        cifar10("test", root=shared_data, copy="official")  # no official batches in the offline folder
    assert len(cifar10("test", root=shared_data, copy="jpeg")) == 10_000
