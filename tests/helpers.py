"""Small models with known Jacobians, shared by the estimator tests."""

import torch
from torch import nn

from deepinfo.result import InfoMaps


def linear_model(C, H, W, m, seed=0, col_scale=True):
    """``h(x) = A x + b`` on flattened images, with uneven column energies."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, C * H * W, generator=g)
    if col_scale:
        A = A * (0.2 + 2 * torch.rand(1, C * H * W, generator=g))
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, m))
    with torch.no_grad():
        model[1].weight.copy_(A)
    return model, A


def exact_cell_energy(A, C, H, W, grid_index, n_cells):
    """``W_g = sum_{u in g} ||A[:, u]||^2`` for a flattened ``[C, H, W]`` input."""
    per_pixel = A.pow(2).sum(0).reshape(C, H * W).sum(0)
    return torch.zeros(n_cells, dtype=A.dtype).index_add_(0, grid_index, per_pixel)


class SmallConvNet(nn.Module):
    """A ReLU network with named layers (conv1 -> relu1 -> conv2 -> relu2 -> pool -> fc)."""

    def __init__(self, C=3, width=8, classes=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(C, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(width * 4, classes)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.bn(self.relu2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


def known_maps(values):
    values = torch.as_tensor(values, dtype=torch.float32)
    L, B, H, W = values.shape
    z = torch.zeros(L, B)
    return InfoMaps(
        layers=[f"l{i}" for i in range(L)], pixelwise=values, constraint=z + 1, constraint_se=z,
        sigma=values.exp(), delta_f2=z + 1, n_capped=z.long(), kind="cid", method="linear",
        beta=1.5e-4, sigma_max=10.0, grid=(H, W), image_size=(H, W), seed=0,
    )


def randomize_bn(model: nn.Module, seed: int = 1, mean_scale: float = 0.1) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BN matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * mean_scale)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
