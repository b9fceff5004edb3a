"""make plan: jobs, downloads, disk and an estimate from measured costs, without running anything."""

import pytest

from deepinfo.book import plan as PL
from deepinfo.toolkit.profile import load_profile


def test_workload_counts_the_work_each_notebook_does():
    work = PL.workload(load_profile("paper"))
    assert set(work) >= {"00_validation", "02_layer_curves", "08_compression", "15_unet"}
    assert all(x.count > 0 for parts in work.values() for x in parts)
    # the compression notebook measures every stage and the original; its stages are retrained in a job
    assert {"map", "ru", "decoder"} <= {x.kind for x in work["08_compression"]}
    assert {x.kind for x in work["cub-compressed"]} == {"train"}


def test_gpu_seconds_follow_the_measured_costs():
    costs = {"gpu": {"map_seconds_224": {"vgg16": 0.5, "alexnet": 0.1, "resnet50": 0.2},
                     "linear_seconds_224": {"vgg16": 0.05, "alexnet": 0.01, "resnet50": 0.02},
                     "train_images_per_second_224": {"vgg16": 1000, "alexnet": 5000, "resnet50": 1000},
                     "ru_factor": 10, "decoder_factor": 1, "pgd_factor": 17, "min_map_seconds": 0.01,
                     "min_image_seconds": 1e-6}}
    assert PL.gpu_seconds(PL.Work("map", "vgg16", 10, 224), costs) == pytest.approx(5.0)
    assert PL.gpu_seconds(PL.Work("ru", "vgg16", 10, 224), costs) == pytest.approx(50.0)
    assert PL.gpu_seconds(PL.Work("train", "vgg16", 1000, 224), costs) == pytest.approx(1.0)
    assert PL.gpu_seconds(PL.Work("pgd", "vgg16", 1000, 224), costs) == pytest.approx(17.0)
    # VGG-19 from VGG-16 by FLOPs; a tiny CIFAR net hits the floor
    assert PL.gpu_seconds(PL.Work("map", "vgg19", 1, 224), costs) == pytest.approx(0.5 * 19.6 / 15.5)
    assert PL.gpu_seconds(PL.Work("map", "cifar", 1, 32), costs) == pytest.approx(0.01)


def test_plan_of_the_paper_profile_names_what_would_stop_it(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DEEPINFO_DATA", str(tmp_path))
    assert PL.main(["--profile", "paper"]) == 1
    out, err = capsys.readouterr()
    assert "estimated time on the gpu" in out and "in all" in out and "where the time goes" in out
    assert "to download  cifar10" in out and "cub200" in out
    assert "requires CUDA" in err and "imagenet-val" in err and "isbi2012" in err
    assert "above 4 hours on one GPU; levers" in out and "decoder.layers=stages" in out
    # what if: decoders only at the stage outputs costs less
    total = lambda text: float(text.split("in all")[1].split("min")[0])  # noqa: E731
    PL.main(["--profile", "paper", "--set", "decoder.layers=stages"])
    assert total(capsys.readouterr().out) < total(out)


def test_plan_of_smoke_estimates_from_measured_cpu_runs(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert PL.main(["--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "none: synthetic data" in out and "02_layer_curves" in out and "not estimated" not in out
    assert "measured notebook times" in out


def test_shared_networks_are_jobs_of_their_own_in_the_plan():
    p = load_profile("paper")
    work = PL.workload(p)
    assert {"resnet20-decoders", "resnet20-ae", "cub-compressed"} <= set(work)
    assert not any(x.kind == "decoder" for x in work["02_layer_curves"])  # its decoders are jobs now


def test_the_longest_chain_follows_what_each_job_waits_for():
    p = load_profile("smoke")
    # 14 waits for resnet20-decoders (5 s), which waits for resnet20 (10 s): 1 + 5 + 10 = 16;
    # 03 waits for resnet20 only: 100 + 10 = 110, the longest
    seconds = {"resnet20": 10.0, "resnet20-decoders": 5.0, "14_decoders": 1.0, "03_beta": 100.0}
    assert PL.longest_chain(p, seconds) == 110.0
    seconds["14_decoders"] = 200.0
    assert PL.longest_chain(p, seconds) == 215.0


def test_no_ru_layers_means_no_ru_work_in_the_compression_notebook():
    import dataclasses

    p = load_profile("paper")
    p = dataclasses.replace(p, compression=dataclasses.replace(p.compression, ru_layers=()))
    assert not {x.kind for x in PL.workload(p)["08_compression"]} & {"ru", "decoder"}


def test_levers_each_lower_the_paper_estimate():
    import tomllib

    costs = tomllib.loads(PL.COSTS.read_text())
    seconds, _ = PL.estimate(load_profile("paper"), "gpu", costs)
    base = sum(v for v in seconds.values() if v is not None)
    found = PL.levers("paper", [], costs)
    assert [extra for extra, _, _ in found[:-1]] == [extra for extra, _ in PL.LEVERS]
    assert all(total < base for _, _, total in found)
    assert found[-1][2] <= min(total for _, _, total in found[:-1])  # all together save the most


def test_measured_cifar_training_throughput_replaces_the_flops_scaling():
    costs = {"gpu": {"map_seconds_224": {}, "linear_seconds_224": {}, "train_images_per_second_224": {"resnet50": 1.0},
                     "ru_factor": 10.0, "decoder_factor": 2.0, "pgd_factor": 17.0, "min_map_seconds": 0.0,
                     "min_image_seconds": 0.0, "cifar_train_images_per_second": {"resnet20": 3000, "resnet56": 1000}}}
    # mean throughput over the measured depths: 2 / (3000 + 1000) s per image; decoder images cost 2x
    assert PL.gpu_seconds(PL.Work("train", "cifar", 4000, 32), costs) == pytest.approx(2.0)
    assert PL.gpu_seconds(PL.Work("decoder", "cifar", 4000, 32), costs) == pytest.approx(4.0)
    del costs["gpu"]["cifar_train_images_per_second"]  # FLOPs-scaled from the ResNet-50's 1 image/s
    assert PL.gpu_seconds(PL.Work("train", "cifar", 1, 32), costs) == pytest.approx(0.041 / 4.1)
