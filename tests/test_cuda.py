"""The CUDA paths: estimators, folding, decoder and classifier training on a GPU.

Skipped without one (CI has none); run ``pytest tests/test_cuda.py`` on a GPU machine.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import deepinfo
from deepinfo.datasets.synthetic import Synthetic
from deepinfo.decoder import train_decoder
from deepinfo.models import cifar_resnet
from deepinfo.toolkit.training import Recipe, train
from helpers import SmallConvNet, exact_cell_energy, linear_model, randomize_bn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
BETA = 1.5e-4
C_ENT = 0.5 * torch.log(torch.tensor(2 * torch.pi * torch.e)).item()


def test_closed_form_on_cuda():
    C, H, W, m = 3, 6, 10, 40
    model, A = linear_model(C, H, W, m)
    x = torch.rand(2, C, H, W)
    maps = deepinfo.cid(model.cuda(), x.cuda(), "1", method="linear", n_probes=64, progress=False)
    Wg = exact_cell_energy(A, C, H, W, torch.arange(H * W), H * W)
    expected = 0.5 * torch.log(BETA * Wg.mean() / Wg) + C_ENT
    assert maps.pixelwise.is_cuda
    assert torch.allclose(maps.pixelwise[0].reshape(2, -1).cpu(), expected.expand(2, -1), atol=1e-3)


@pytest.mark.parametrize("method", ["linear", "optimize"])
def test_cid_on_cuda_holds_the_constraint_is_seeded_and_leaves_the_model(method):
    net = cifar_resnet(20)
    randomize_bn(net)
    net = net.cuda().train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(3, 3, 32, 32, device="cuda")
    layers = ["layer1.0", "layer3.2"]
    a = deepinfo.cid(net, x, layers, method=method, steps=20, progress=False)
    b = deepinfo.cid(net, x, layers, method=method, steps=20, progress=False)
    assert ((a.constraint - 1).abs() <= 0.05).all(), a.constraint
    # same seed, same noise and probes; cuDNN's backward kernels are not bitwise deterministic,
    # so the optimised maps agree to ~1e-3 nats on an H200 (the CPU's are bitwise equal)
    tol = 1e-5 if method == "linear" else 1e-2
    assert torch.allclose(a.pixelwise, b.pixelwise, atol=tol)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(m.training for m in net.modules())


def test_cuda_and_cpu_agree_within_probe_noise():
    net = SmallConvNet()
    x = torch.rand(4, 3, 12, 12)
    cpu = deepinfo.cid(net, x, ["relu2", "fc"], method="linear", n_probes=256, progress=False)
    gpu = deepinfo.cid(net.cuda(), x.cuda(), ["relu2", "fc"], method="linear", n_probes=256, progress=False)
    gap = (cpu.mean() - gpu.mean().cpu()).abs()
    assert gap.max() < 0.05, gap
    assert torch.allclose(cpu.delta_f2, gpu.delta_f2.cpu(), rtol=0.1)


def test_training_and_decoder_on_cuda():
    data = Synthetic(64, image_size=32, num_classes=4, seed=0)
    net = cifar_resnet(20, num_classes=4)
    history = train(net, data, Recipe(epochs=1, batch_size=16, lr=0.05, augment="crop_flip", crop_padding=2), device="cuda", progress=False)
    assert next(net.parameters()).is_cuda and len(history.train_loss) == 1
    images = DataLoader([data[i][0] for i in range(32)], batch_size=16)
    decoder, log = train_decoder(net, "layer2.2", images, epochs=1, progress=False)
    assert next(decoder.parameters()).is_cuda and len(log) > 0
    x = torch.stack([data[i][0] for i in range(2)]).cuda()
    ru = deepinfo.ru(net, {"layer2.2": decoder}, x, "layer2.2", steps=5, progress=False)
    assert ru.pixelwise.is_cuda and torch.isfinite(ru.pixelwise).all()
    mask = torch.zeros(2, 32, 32, dtype=torch.bool, device="cuda")
    mask[:, 8:24, 8:24] = True
    assert deepinfo.concentration(ru, mask).shape == (1, 2)
    boxes = torch.tensor([[8, 8, 24, 24], [4, 4, 20, 28]], device="cuda")
    assert deepinfo.concentration(ru, boxes).is_cuda


def test_batchnorm_folding_on_cuda(monkeypatch):
    from deepinfo._features import FeatureTap, ModelGuard
    from deepinfo._fold import fold_batchnorm

    net = cifar_resnet(20)
    randomize_bn(net)
    net = net.cuda().eval()
    x = torch.rand(2, 3, 32, 32, device="cuda")
    # in float32: TF32 convolutions (cuDNN's default) round folded and unfolded weights apart
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with ModelGuard(net), torch.no_grad():
        folded = fold_batchnorm(net, x[:1], ["layer3.2"])
        assert folded is not net and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        a = FeatureTap(net, ["layer3.2"])(x)["layer3.2"]
        b = FeatureTap(folded, ["layer3.2"])(x)["layer3.2"]
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_augmentation_on_cuda_equals_the_cpus():
    from deepinfo.toolkit.training import augment

    recipe = Recipe(epochs=1, batch_size=8, lr=0.1, augment="crop_flip", crop_padding=4)
    x, masks = torch.rand(8, 3, 32, 32), torch.rand(8, 32, 32) > 0.5
    cpu = augment([x, torch.zeros(8), masks], recipe, torch.Generator().manual_seed(1))
    gpu = augment([x.cuda(), torch.zeros(8).cuda(), masks.cuda()], recipe, torch.Generator().manual_seed(1))
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[2], gpu[2].cpu())


def test_the_batch_is_sized_to_the_free_gpu_memory():
    from deepinfo._engine import gpu_batch_size
    from deepinfo._features import FeatureTap

    net = cifar_resnet(20).cuda().eval()
    x = torch.rand(2, 3, 32, 32, device="cuda")
    tap = FeatureTap(net, ["layer1", "layer3"])
    n = gpu_batch_size(tap, x, ["layer1", "layer3"])
    free, _ = torch.cuda.mem_get_info()
    assert 1 <= n <= 1024 and n > 16  # a ResNet-20 on 32 px images: far more than 16 fit on any GPU
    maps = deepinfo.cid(net, x, ["layer3"], method="linear", progress=False)  # sized automatically
    assert maps.pixelwise.shape == (1, 2, 32, 32)
