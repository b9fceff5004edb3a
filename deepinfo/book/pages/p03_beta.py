"""Page ``03_beta``: CID per block of a CIFAR ResNet for several values of beta (Fig. 3(b)).

The analysis behind the notebook: the per-(beta, layer, image) table ``cid_per_beta`` and its means
per block, the figure ``cid_per_beta`` with the fitted rate per block (``slope_per_block``, nats per
decade of beta, beside the closed form 0.5 ln 10), the block x beta table of mean CID and its
summaries, the per-image slopes over log10 beta that decide the first claim, the per-beta depth
trends of the second (``depth_trend_per_beta``), and the numbers of both claims.

CID is the layer's mean pixel-wise entropy ``H_g`` in nats; a block is a measured layer, numbered
from 1 in forward order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from deepinfo.book.verdicts import Verdict, correlation, on_constraint, ratio_error

__all__ = ["beta_frame", "mean_per_block", "plot_cid_per_beta", "slope_per_block", "cid_by_block",
           "smallest_beta_step", "depth_rank_correlations", "depth_trend_summary", "rows_on_constraint",
           "beta_slopes", "mean_slope_per_image", "beta_claim_numbers", "beta_claim_detail", "trend_table",
           "depth_claim_numbers"]


def beta_frame(frames: Sequence[pd.DataFrame], depth: int) -> pd.DataFrame:
    """The maps of every beta in one table (``cid_per_beta``).

    Args:
        frames: ``InfoMaps.to_frame()`` of each beta, in the profile's order.
        depth: the ResNet's depth (for the ``network`` column).

    Returns:
        ``network`` (``"ResNet-<depth>"``) first, the frames' columns (``value`` the layer's CID in
        nats, ``constraint`` the achieved ratio ``r``, ``n_capped``, ``beta`` ...), then ``block``
        (``layer_index + 1``).
    """
    cid_df = pd.concat(frames, ignore_index=True)
    cid_df.insert(0, "network", f"ResNet-{depth}")
    cid_df["block"] = cid_df["layer_index"] + 1
    return cid_df


def mean_per_block(cid_df: pd.DataFrame) -> pd.DataFrame:
    """Per (beta, block, layer): the mean and standard deviation of CID over the images.

    Args:
        cid_df: :func:`beta_frame`'s table.

    Returns:
        beta, block, layer, cid (mean, nats), cid_sd (nats), max_ratio_error (largest ``|r - 1|``),
        capped_cells (cells whose sigma hit the cap, summed over the images).
    """
    return (cid_df.groupby(["beta", "block", "layer"], as_index=False)
            .agg(cid=("value", "mean"), cid_sd=("value", "std"),
                 max_ratio_error=("constraint", ratio_error), capped_cells=("n_capped", "sum")))


def plot_cid_per_beta(cid_df: pd.DataFrame, cid_mean: pd.DataFrame, depth: int, n_images: int, rate: float,
                      n_layers: int) -> plt.Figure:
    """The figure ``cid_per_beta``.

    Left: CID per block, one curve per beta (mean over images, band one standard deviation).
    Right: the block means against log10 beta, one line per block, each beside a grey dashed line
    of slope ``rate`` (the closed form's nats per decade) through the mean of its points.

    Args:
        cid_df: :func:`beta_frame`'s table (not changed); cid_mean: :func:`mean_per_block`'s.
        depth: the ResNet's depth; n_images: images per beta; n_layers: measured layers.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    shown = cid_df.copy()
    shown["beta "] = shown["beta"].map(lambda b: f"{b:.1e}")
    sns.lineplot(shown, x="block", y="value", hue="beta ", marker="o", errorbar="sd",
                 palette="rocket_r", ax=axes[0])
    axes[0].set_xticks(sorted(shown.block.unique()))
    axes[0].set_xlabel(f"block of ResNet-{depth} (1 = first measured layer)")
    axes[0].set_ylabel("CID (nats)")
    axes[0].set_title(f"CID per block, {n_images} test images")
    axes[0].legend(title="beta", fontsize=8)

    for (block, layer), g in cid_mean.groupby(["block", "layer"]):
        lb = np.log10(g.beta.to_numpy())
        axes[1].plot(lb, g.cid, marker="o", label=f"{block}: {layer}")
        axes[1].plot(lb, g.cid.mean() + rate * (lb - lb.mean()), color="grey", ls="--", lw=0.8)
    axes[1].set_xlabel("log10 beta")
    axes[1].set_ylabel("CID (nats)")
    axes[1].set_title("CID against beta; grey: 0.5 ln 10 nats per decade")
    axes[1].legend(fontsize=7, ncol=2 if n_layers > 6 else 1)
    fig.tight_layout()
    return fig


def slope_per_block(cid_mean: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Per block, the least-squares slope of its mean CID against log10 beta.

    Args:
        cid_mean: :func:`mean_per_block`'s table.
        rate: the closed form's rate (nats per decade), copied into each row.

    Returns:
        block, layer, ``slope (nats/decade)``, ``closed form`` (``rate``).
    """
    slopes = []
    for (block, layer), g in cid_mean.groupby(["block", "layer"]):
        lb = np.log10(g.beta.to_numpy())
        slope = float(np.polyfit(lb, g.cid.to_numpy(), 1)[0])
        slopes.append({"block": block, "layer": layer, "slope (nats/decade)": slope, "closed form": rate})
    return pd.DataFrame(slopes)


def cid_by_block(cid_mean: pd.DataFrame, betas: Sequence[float]) -> pd.DataFrame:
    """Mean CID (nats) with one row per block (sorted) and one column per beta (in ``betas``' order)."""
    return cid_mean.pivot(index="block", columns="beta", values="cid").sort_index()[betas]


def smallest_beta_step(by_block: pd.DataFrame) -> float:
    """The smallest increase of a block's mean CID between neighbouring betas (nats; negative
    when some block's CID falls), from :func:`cid_by_block`'s table."""
    return float(np.diff(by_block.to_numpy(), axis=1).min())


def depth_rank_correlations(by_block: pd.DataFrame, betas: Sequence[float]) -> dict[float, float]:
    """Per beta, the Spearman correlation of block index and mean CID (NaN under 3 blocks)."""
    return {beta: correlation(by_block.index.to_numpy(), by_block[beta].to_numpy(), "spearman") for beta in betas}


def depth_trend_summary(by_block: pd.DataFrame, rho: Mapping[float, float], betas: Sequence[float]) -> pd.DataFrame:
    """Per beta: the Spearman rho of block index and CID, and the last minus the first block's
    mean CID (nats)."""
    return pd.DataFrame({"beta": betas, "Spearman rho (block index, CID)": [rho[b] for b in betas],
                         "last - first block (nats)": [float(by_block[b].iloc[-1] - by_block[b].iloc[0])
                                                       for b in betas]})


def rows_on_constraint(cid_df: pd.DataFrame, tol: float) -> pd.DataFrame:
    """:func:`beta_frame`'s rows whose map met the constraint (``|r - 1| <= tol``), with ``value``
    renamed ``cid`` and ``constraint`` renamed ``r``."""
    rows = cid_df.rename(columns={"value": "cid", "constraint": "r"})
    return rows[on_constraint(rows.r, tol)]


def beta_slopes(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (image, layer), the least-squares slope of CID against log10 beta (nats per decade).

    Args:
        rows: :func:`rows_on_constraint`'s table.

    Returns:
        image, layer, slope; a pair with fewer than 2 distinct betas left is left out.
    """
    per_block = []
    for (image, layer), g in rows.groupby(["image", "layer"]):
        if g.beta.nunique() >= 2:
            per_block.append({"image": image, "layer": layer,
                              "slope": float(np.polyfit(np.log10(g.beta.to_numpy()), g.cid.to_numpy(), 1)[0])})
    return pd.DataFrame(per_block, columns=["image", "layer", "slope"])


def mean_slope_per_image(per_block: pd.DataFrame) -> np.ndarray:
    """Per image (sorted), the mean of :func:`beta_slopes` over its blocks: the unit of the first claim."""
    return per_block.groupby("image").slope.mean().to_numpy()


def beta_claim_numbers(by_block: pd.DataFrame, betas: Sequence[float], min_step: float) -> dict[str, float]:
    """The first claim's numbers: ``cid_block<b>_beta<beta>`` (mean CID, nats) for every block and
    beta, and ``min_step_between_betas`` (:func:`smallest_beta_step`)."""
    return {**{f"cid_block{b}_beta{beta:g}": float(by_block.loc[b, beta]) for b in by_block.index for beta in betas},
            "min_step_between_betas": min_step}


def beta_claim_detail(slopes: pd.DataFrame, rate: float, min_step: float) -> str:
    """The first claim's detail: the range of :func:`slope_per_block` against the closed form, and
    the smallest step between neighbouring betas."""
    return (f"Fitted rate per block (means over images): {slopes['slope (nats/decade)'].min():.3f} to "
            f"{slopes['slope (nats/decade)'].max():.3f} nats per decade (closed form for a linear layer: {rate:.3f}); "
            f"smallest step between neighbouring betas {min_step:.3f} nats.")


def trend_table(per_beta: Mapping[float, Verdict]) -> pd.DataFrame:
    """One row per beta (``depth_trend_per_beta``): the verdict on the per-image slopes over the
    blocks -- ``slope (nats/block)`` (mean over images), lo, hi, n_images, verdict."""
    return pd.DataFrame([{"beta": b, "slope (nats/block)": v.effect, "lo": v.interval[0], "hi": v.interval[1],
                          "n_images": v.n_units, "verdict": v.verdict} for b, v in per_beta.items()])


def depth_claim_numbers(per_beta: Mapping[float, Verdict], rho: Mapping[float, float],
                        betas: Sequence[float]) -> dict[str, float]:
    """The second claim's numbers: ``slope_beta<beta>`` (mean per-image slope, nats per block) and
    ``spearman_means_beta<beta>`` (:func:`depth_rank_correlations`)."""
    return {**{f"slope_beta{b:g}": v.effect for b, v in per_beta.items()},
            **{f"spearman_means_beta{b:g}": rho[b] for b in betas}}
