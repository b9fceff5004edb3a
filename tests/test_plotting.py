import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from deepinfo.plotting import overlay, plot_layers  # noqa: E402
from helpers import known_maps  # noqa: E402


def test_overlay_stretches_a_grid_map_over_the_image():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    shown = overlay(torch.rand(3, 32, 32), torch.arange(16.0).reshape(4, 4), ax, colorbar=True)
    assert shown.get_extent() == [0, 32, 32, 0]
    assert shown.get_array().shape == (4, 4)
    with pytest.raises(ValueError, match="Gh, Gw"):
        overlay(torch.rand(3, 8, 8), torch.rand(2, 2, 2), ax)
    plt.close(fig)


def test_plot_layers_shares_one_scale_across_layers(tmp_path):
    import matplotlib.pyplot as plt

    v = torch.stack([torch.full((2, 4, 4), -3.0), torch.full((2, 4, 4), 1.0)])
    maps = known_maps(v)
    fig = plot_layers(maps, torch.rand(2, 3, 4, 4))
    overlays = [im for ax in fig.axes for im in ax.get_images() if im.get_alpha() is not None]
    assert len(overlays) == 4
    assert {im.get_clim() for im in overlays} == {(-3.0, 1.0)}
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    plt.close(fig)
