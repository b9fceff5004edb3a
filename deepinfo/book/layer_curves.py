"""Layer curves (CID per block) in the three regimes that rows 2 and 3 of the book set side by side.

The paper's Fig. 5(a) and Fig. 3(b) plot CID against depth. Which sigma a "CID" is made of matters:

* **bare closed form** (``method="linear", calibrate=False``): sigma of the *linearised* layer,
  ``sigma_g^2 = beta mean(W) / W_g``. On the real (non-linear) network it reaches a distortion
  ratio ``r = E||f'-f||^2 / (beta delta_f^2)`` that is generally not 1; its CID is
  ``0.5 log beta`` plus a shape term, whatever ``r``.
* **constraint held on the real network**: the closed form's shape with its common scale set so
  that ``r = 1`` on the real network (``method="linear"``, the default ``calibrate=True``), and the
  paper's Lagrangian with lambda adapted until ``r`` is within tol of 1 (``method="optimize"``).
* **the authors' loop** (fixed lambda, 100 Adam steps, ``benchmarks/paper_loop.py``), whose ``r``
  nothing holds.

A layer that tolerates more noise than its linearisation predicts (``r < 1`` at the bare closed
form) gets a *higher* CID once the constraint is held, and one that tolerates less (``r > 1``) a
lower one: ``CID_held ~ CID_bare - 0.5 log r`` when only the scale changes. So a curve that rises
with depth in one regime can be flat or falling in another, and the book reports them together.

Functions here turn maps into per-image rows (:func:`per_image`), summarise them per block with a
bootstrap interval over images (:func:`summarize`, the columns of
``02_layer_curves__regimes.csv``), and give each image's trend with depth (:func:`depth_slopes`,
nats per block, the unit of the verdicts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from deepinfo._features import features
from deepinfo._grid import Grid
from deepinfo.result import InfoMaps
from deepinfo.book.verdicts import bootstrap, on_constraint

BARE, CALIBRATED, OPTIMIZE, PAPER_LOOP = ("closed form (bare)", "closed form, calibrated", "optimize",
                                          "paper loop (fixed lambda)")
#: the estimator settings of each regime (added to the profile's estimator keywords)
REGIMES = {BARE: {"method": "linear", "calibrate": False}, CALIBRATED: {"method": "linear", "calibrate": True},
           OPTIMIZE: {"method": "optimize"}}
#: regimes whose maps meet the constraint on the real network (by construction, within tol)
CONSTRAINT_HELD = (CALIBRATED, OPTIMIZE)
COLUMNS = ["network", "layer", "block_index", "estimator", "beta", "cid", "cid_lo", "cid_hi", "r", "n_images"]

__all__ = ["BARE", "CALIBRATED", "OPTIMIZE", "PAPER_LOOP", "REGIMES", "CONSTRAINT_HELD", "COLUMNS",
           "per_image", "paper_loop_rows", "sampled_ratio", "summarize", "depth_slopes", "paired_change",
           "resnet_rows", "slope_over_depth", "last_block", "strictly_increasing", "trend_words", "layer_rise",
           "change_from_original"]


def per_image(maps: InfoMaps, network: str, estimator: str, image_ids: Sequence[int] | None = None):
    """One row per (layer, image): network, layer, block_index (1 = first measured), image, estimator,
    beta, cid (nats, the layer's mean pixel-wise CID), r (achieved ratio), delta_f2."""
    import pandas as pd

    frame = maps.to_frame(image_ids=image_ids)
    return pd.DataFrame({"network": network, "layer": frame["layer"], "block_index": frame["layer_index"] + 1,
                         "image": frame["image"], "estimator": estimator, "beta": frame["beta"],
                         "cid": frame["value"], "r": frame["constraint"], "delta_f2": frame["delta_f2"]})


@torch.no_grad()
def sampled_ratio(model: nn.Module, layer: str, image: torch.Tensor, log_sigma: torch.Tensor, delta_f2: float,
                  beta: float, grid, draws: int = 64, seed: int = 0) -> tuple[float, float]:
    """``r = E||h(x + sigma eps) - h(x)||^2 / (beta delta_f^2)`` of a given sigma, by plain sampling.

    Args:
        image: ``[C, H, W]``; log_sigma: ``[G]`` (one per grid cell); delta_f2: ``||J||_F^2`` at the image.
    Returns:
        ``(r, standard error of r)`` over ``draws`` noise draws.
    """
    f = features(model, image[None], layer)[layer].flatten(1)
    sigma = Grid.make(grid, tuple(image.shape[-2:])).to_pixels(log_sigma.reshape(1, -1).exp())[0]
    eps = torch.randn(draws, *image.shape, generator=torch.Generator().manual_seed(seed))
    noisy = features(model, image[None] + sigma * eps, layer)[layer].flatten(1)
    d = (noisy - f).pow(2).sum(1) / (beta * delta_f2)
    return float(d.mean()), float(d.std() / math.sqrt(draws))


def paper_loop_rows(model: nn.Module, x: torch.Tensor, layers: Sequence[str], delta_f2: torch.Tensor, *,
                    network: str, beta: float, grid, loop: Callable, seed: int = 0, image_ids=None,
                    draws: int = 64, progress: bool = True):
    """Per-image rows of the authors' fixed-lambda loop, with the ratio ``r`` its sigma reaches.

    Args:
        delta_f2: ``[L, B]`` ``||J||_F^2`` of each layer and image (e.g. ``InfoMaps.delta_f2`` of
            another estimate on the same images), to measure ``r`` against the exact constraint.
        loop: ``loop(model, x[b:b+1], layer, beta=, grid=, seed=) -> (cid_map, log_sigma)``
            (``benchmarks/paper_loop.py``'s ``paper_loop_cid``).
        draws: noise draws to measure each ``r`` (its standard error is kept as ``r_se``).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    ids = list(range(x.shape[0])) if image_ids is None else list(image_ids)
    rows = []
    was_training = model.training
    model.eval()
    try:
        jobs = [(li, b) for b in range(x.shape[0]) for li in range(len(layers))]
        for li, b in tqdm(jobs, desc=f"paper loop {network}", disable=not progress):
            cid_map, log_sigma = loop(model, x[b:b + 1], layers[li], beta=beta, grid=grid, seed=seed)
            r, se = sampled_ratio(model, layers[li], x[b], log_sigma, float(delta_f2[li, b]), beta, grid,
                                  draws=draws, seed=seed)
            rows.append({"network": network, "layer": layers[li], "block_index": li + 1, "image": ids[b],
                         "estimator": PAPER_LOOP, "beta": beta, "cid": float(cid_map.mean()), "r": r,
                         "r_se": se, "delta_f2": float(delta_f2[li, b])})
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


def summarize(rows, confidence: float = 0.95, seed: int = 0):
    """Per (network, estimator, beta, layer): mean CID over images with its bootstrap interval.

    Returns the tidy table of ``COLUMNS``: ``cid`` the mean over images, ``cid_lo``/``cid_hi`` the
    percentile interval of that mean (bootstrap over images), ``r`` the mean achieved ratio.
    """
    import pandas as pd

    alpha = 1 - confidence
    out = []
    for (net, est, beta, block, layer), g in rows.groupby(["network", "estimator", "beta", "block_index", "layer"],
                                                          sort=False):
        v = g["cid"].to_numpy(float)
        lo, hi = (np.quantile(bootstrap(v, seed=seed), [alpha / 2, 1 - alpha / 2]) if len(v) > 1
                  else (v[0], v[0]))
        out.append({"network": net, "layer": layer, "block_index": int(block), "estimator": est, "beta": beta,
                    "cid": float(v.mean()), "cid_lo": float(lo), "cid_hi": float(hi),
                    "r": float(g["r"].mean()), "n_images": len(v)})
    return pd.DataFrame(out, columns=COLUMNS)


def depth_slopes(rows, tol: float | None = None):
    """Each image's trend of CID with depth: the least-squares slope over its blocks (nats per block).

    Args:
        rows: per-image rows (:func:`per_image`) of one or more (network, estimator, beta).
        tol: when given, maps with ``|r - 1| > tol`` are left out before the fit (an image keeps
            its slope if at least 3 of its blocks remain) -- for regimes that hold the constraint.
    Returns:
        One row per (network, estimator, beta, image): ``slope`` (nats per block), ``n_blocks``,
        ``rise`` (last minus first block's CID, nats).
    """
    import pandas as pd

    data = rows if tol is None else rows[np.isfinite(rows["r"]) & ((rows["r"] - 1).abs() <= tol)]
    out = []
    for key, g in data.groupby(["network", "estimator", "beta", "image"], sort=False):
        g = g.sort_values("block_index")
        if len(g) < 3:
            continue
        t = g["block_index"].to_numpy(float)
        c = g["cid"].to_numpy(float)
        slope = float(np.polyfit(t, c, 1)[0])
        out.append(dict(zip(["network", "estimator", "beta", "image"], key), slope=slope, n_blocks=len(g),
                        rise=float(c[-1] - c[0])))
    return pd.DataFrame(out, columns=["network", "estimator", "beta", "image", "slope", "n_blocks", "rise"])


def paired_change(base: InfoMaps, other: InfoMaps, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image, ``other``'s layer CID minus ``base``'s, averaged over the layers where both maps
    met the constraint.

    The paired comparison of two networks on the same images and noise seed (a compressed or
    distilled net against its reference, Fig. 7): each image gives one change, the unit of the
    verdict. A (layer, image) pair is used only when both achieved ratios are within ``tol`` of 1.

    Args:
        base, other: maps of the same layers (same names, same order) and images.
        tol: the estimator's tolerance on the achieved ratio ``r``.

    Returns:
        ``(change, n_layers)``: ``[B]`` mean change in nats (NaN for an image with no layer left)
        and ``[B]`` the number of layers each mean is over.
    """
    if list(base.layers) != list(other.layers) or base.constraint.shape != other.constraint.shape:
        raise ValueError(f"paired maps must cover the same layers and images: {base.layers} x "
                         f"{tuple(base.constraint.shape)} vs {other.layers} x {tuple(other.constraint.shape)}")
    ok = torch.from_numpy(on_constraint(base.constraint.numpy(), tol) & on_constraint(other.constraint.numpy(), tol))
    diff = torch.where(ok, other.mean().double() - base.mean().double(), torch.zeros((), dtype=torch.float64))
    n_layers = ok.sum(0)
    change = (diff.sum(0) / n_layers.clamp(min=1)).numpy()
    change[n_layers.numpy() == 0] = np.nan
    return change, n_layers.numpy()


def resnet_rows(maps: InfoMaps, model: nn.Module, depth: int, task: str):
    """``maps.to_frame()`` of a CIFAR ResNet (classifier or auto-encoder) with ``network``,
    ``depth``, ``task``, the ``module`` measured, its ``layer`` name without the auto-encoder's
    ``encoder.`` prefix (so both tasks share layer names) and its ``position``, the fraction of
    residual blocks passed (:func:`deepinfo.models.block_position`)."""
    from deepinfo.models import block_position

    df = maps.to_frame()
    df.insert(0, "network", f"ResNet-{depth}")
    df.insert(1, "depth", depth)
    df.insert(2, "task", task)
    df["module"] = df["layer"]
    df["layer"] = df["module"].str.removeprefix("encoder.")
    df["position"] = df["module"].map(lambda name: block_position(model, name))
    return df


def slope_over_depth(frame, depths: Sequence[int], value: str = "cid"):
    """Per image, the least-squares slope of ``value`` (one row per network) against the depth
    step ``0, 1, 2, ...`` of ``depths``; images missing a depth are left out. A ``Series`` by image."""
    import pandas as pd

    steps = {d: i for i, d in enumerate(depths)}
    out = {}
    for image, g in frame.groupby("image"):
        if g["depth"].nunique() == len(depths):
            g = g.sort_values("depth")
            out[image] = float(np.polyfit(g["depth"].map(steps).to_numpy(float), g[value].to_numpy(float), 1)[0])
    return pd.Series(out, dtype=float)


def last_block(frame):
    """The rows of each network's last measured layer (largest ``position``)."""
    return frame[frame["position"] == frame.groupby("network")["position"].transform("max")]


def strictly_increasing(values) -> bool:
    """Whether every value is above the one before."""
    return bool(all(b > a for a, b in zip(values[:-1], values[1:])))


def trend_words(trends, estimator: str, beta: float) -> str:
    """One clause per network of a regime's trend with depth at ``beta`` (rows of the trend table)."""
    part = trends[(trends.estimator == estimator) & np.isclose(trends.beta, beta)]
    return "; ".join(f"{r.network} {r['trend with depth']} ({r['slope (nats/block)']:+.4f} "
                     f"[{r.slope_lo:+.4f}, {r.slope_hi:+.4f}] nats/block, r {r['r first block']:.2f} -> "
                     f"{r['r last block']:.2f})" for _, r in part.iterrows())


def layer_rise(values, network: str, kind: str, column: str, tol: float):
    """Per image, ``column`` at the highest measured layer minus at the lowest, for one network
    and kind (``"cid"`` / ``"ru"``) of the per-(layer, image) table ``values`` (columns network,
    kind, layer, layer_index, image, constraint and ``column``); NaN where either map is off the
    constraint. Returns the rows and the ratios ``r`` of the maps that enter."""
    import pandas as pd

    g = values[(values.network == network) & (values.kind == kind)]
    lo, hi = g.layer_index.min(), g.layer_index.max()
    first = g[g.layer_index == lo].set_index("image").sort_index()
    last = g[g.layer_index == hi].set_index("image").sort_index()
    on = on_constraint(first.constraint, tol) & on_constraint(last.constraint, tol)
    rows = pd.DataFrame(dict(quantity=column, network=network, kind=kind.upper(), image=first.index,
                             lowest_layer=first.layer.to_numpy(), highest_layer=last.layer.to_numpy(),
                             lowest=first[column].to_numpy(), highest=last[column].to_numpy(), on_constraint=on))
    rows["difference"] = np.where(on, rows.highest - rows.lowest, np.nan)
    return rows, np.concatenate([first.constraint.to_numpy(), last.constraint.to_numpy()])


def change_from_original(frame, column: str, quantity: str):
    """Per (derived net, layer, image), ``column`` minus the original's (``keep == 1``), with
    ``on_constraint`` true when both maps met it (columns network, keep, layer, image, delta,
    on_constraint, quantity)."""
    import pandas as pd

    if frame.empty:
        return pd.DataFrame(columns=["network", "keep", "layer", "image", "on_constraint", "delta", "quantity"])
    base = frame[frame.keep == 1.0].set_index(["layer", "image"])
    out = frame[frame.keep != 1.0][["network", "keep", "layer", "image", column, "on_constraint"]].copy()
    idx = list(zip(out.layer, out.image))
    out["delta"] = out[column].to_numpy() - base.loc[idx, column].to_numpy()
    out["on_constraint"] = out["on_constraint"].to_numpy(bool) & base.loc[idx, "on_constraint"].to_numpy(bool)
    out["quantity"] = quantity
    return out.drop(columns=[column])
