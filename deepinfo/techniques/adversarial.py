"""PGD adversarial examples and adversarial training (Madry et al., 2018), in pixel space.

The paper (App. F.4) trains an AlexNet on CUB-200 with PGD L-infinity adversarial examples (10
steps of size 0.001) and compares its information discarding with a normally trained twin.

Public names:

- :func:`pgd_linf` -- the attack: images ``[B, C, H, W]`` in [0, 1] -> adversarial images in the
  L-infinity ball of radius ``epsilon`` around them, still in [0, 1].
- :func:`adversarial_loss` -- a ``loss_fn`` for :func:`deepinfo.toolkit.training.train` (and so for
  :func:`deepinfo.book.experiments.cub_model`) that trains on PGD examples only, as Madry et al. do.
- :func:`pgd_accuracy` -- accuracy of a model on a data set under the attack.
- :func:`pgd_settings` -- the attack's keyword arguments from a profile's ``[adversarial]`` section.

Which mode the attack runs in. :func:`deepinfo.toolkit.training.train` calls its ``loss_fn`` with the model
in train mode, and :func:`adversarial_loss` attacks that training-mode model (``mode="train"``),
as Madry et al. do: the perturbation is the worst case for the function the optimizer is about to
update (batch statistics in BatchNorm, dropout active), not for the running-statistics network,
whose BatchNorm estimates lag behind early in training. The cost of a training-mode attack is
that each of its forward passes would also update the BatchNorm running statistics; so
:func:`pgd_linf` saves every BatchNorm buffer (running mean / variance, batch counter) before the
attack and puts it back afterwards. The running statistics then move exactly once per training
step, on the adversarial batch the network is trained on -- as in normal training, never ten
extra times on half-way perturbed batches. Evaluation (:func:`pgd_accuracy`) attacks the
eval-mode network, the one that is measured.

Whatever the mode, :func:`pgd_linf` leaves the model as it found it: train/eval mode, every
parameter's ``requires_grad`` (switched off during the attack so no parameter gradient is built or
accumulated) and the BatchNorm buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepinfo._images import check_images

__all__ = ["adversarial_loss", "pgd_accuracy", "pgd_linf", "pgd_settings"]

MODES = ("eval", "train", "current")


def pgd_settings(profile) -> dict[str, Any]:
    """``epsilon``, ``step_size``, ``steps``, ``random_start`` from the profile's ``[adversarial]``."""
    from deepinfo.toolkit.profile import load_profile

    a = load_profile(profile).adversarial
    return {"epsilon": a.epsilon, "step_size": a.step_size, "steps": a.steps, "random_start": a.random_start}


def _check(epsilon: float, step_size: float, steps: int, mode: str) -> None:
    if not (epsilon >= 0 and float(epsilon) == float(epsilon)):
        raise ValueError(f"epsilon must be a number >= 0 (pixel units, images in [0, 1]), got {epsilon!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0 (pixel units), got {step_size!r}")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _bn_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, saved copy) for every buffer of every BatchNorm / InstanceNorm-with-stats module."""
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            for buf in module.buffers(recurse=False):
                saved.append((buf, buf.detach().clone()))
    return saved


def pgd_linf(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    mode: Literal["eval", "train", "current"] = "eval",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy in the L-infinity ball (Madry et al.).

    Starting at ``images`` (plus uniform noise in ``[-epsilon, epsilon]`` when ``random_start``),
    each of ``steps`` steps moves every pixel by ``step_size * sign(gradient)`` and projects back
    onto ``{x' : |x' - x|_inf <= epsilon} ∩ [0, 1]``. The last iterate is returned.

    Args:
        model: classifier, pixel-space input ``[B, C, H, W]`` -> logits ``[B, K]``.
        images: ``[B, C, H, W]`` in [0, 1].
        labels: ``[B]`` class indices (the loss that is increased is their cross-entropy).
        epsilon: L-infinity radius, pixel units (1/255 = one grey level).
        step_size: pixel units per step.
        steps: number of steps (0 returns the random start, or ``images``).
        random_start: start at a uniform random point of the ball (Madry et al.).
        mode: run the model in ``"eval"`` mode, ``"train"`` mode (BatchNorm batch statistics,
            dropout; running statistics are restored afterwards) or the ``"current"`` one.
        generator: CPU generator for the random start (``None``: torch's global RNG).

    Returns:
        Adversarial images ``[B, C, H, W]`` (detached, same dtype / device as ``images``) with
        ``|x_adv - images| <= epsilon`` element-wise and values in [0, 1].

    The model is left as found: mode, ``requires_grad`` of every parameter, BatchNorm buffers.
    """
    _check(epsilon, step_size, steps, mode)
    check_images(images, "images", pixel_range="error")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be [B] = [{images.shape[0]}], got shape {tuple(labels.shape)}")
    x = images.detach()
    labels = labels.long()
    low, high = (x - epsilon).clamp(min=0), (x + epsilon).clamp(max=1)
    if random_start and epsilon > 0:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype,
                           device="cpu" if generator is not None else x.device)
        x_adv = (x + (2 * noise.to(x.device) - 1) * epsilon).clamp(0, 1)
    else:
        x_adv = x.clone()

    was_training = model.training
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    bn_saved = _bn_buffers(model)
    try:
        if mode != "current":
            model.train(mode == "train")
        for p, _ in grad_flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            for _ in range(steps):
                x_adv.requires_grad_(True)
                # sum, not mean: only the sign is used, and a sum keeps per-image gradients
                # independent of the batch size (no underflow to an exact 0 on big batches)
                loss = F.cross_entropy(model(x_adv), labels, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = torch.minimum(torch.maximum(x_adv.detach() + step_size * grad.sign(), low), high)
    finally:
        for buf, saved in bn_saved:
            buf.copy_(saved)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return x_adv.detach()


def adversarial_loss(
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    *,
    mode: Literal["eval", "train", "current"] = "train",
    label_smoothing: float = 0.0,
):
    """A ``loss_fn(model, batch) -> (loss, logits)`` that trains on PGD examples only (Madry et al.).

    The batch's images are replaced by :func:`pgd_linf` examples (attacking the training-mode
    model by default; see the module docstring for why and how BatchNorm statistics are kept
    clean), then the loss is the cross-entropy of the model on them, with the model in the mode
    :func:`deepinfo.toolkit.training.train` put it in. The random start uses torch's global RNG, which
    ``train`` seeds and saves with its state, so runs are reproducible and resumable. The logits
    are those of the adversarial batch (``train`` reports training accuracy under attack).
    """
    _check(epsilon, step_size, steps, mode)

    def loss_fn(model: nn.Module, batch: Sequence[Any]):
        images, labels = batch[0], batch[1]
        x_adv = pgd_linf(model, images, labels, epsilon=epsilon, step_size=step_size, steps=steps,
                         random_start=random_start, mode=mode)
        logits = model(x_adv)
        return F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing), logits

    return loss_fn


def pgd_accuracy(
    model: nn.Module,
    dataset: Dataset,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """Top-1 accuracy in [0, 1] of the eval-mode ``model`` on PGD examples of ``dataset``'s items.

    Items are ``(image [C, H, W] in [0, 1], label, ...)``; the random starts come from a generator
    seeded with ``seed`` (same seed, same number). ``epsilon = 0`` or ``steps = 0`` without a
    random start gives the clean accuracy.
    """
    if len(dataset) == 0:
        raise ValueError("pgd_accuracy: the data set is empty")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    correct = total = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in tqdm(loader, desc="PGD accuracy", disable=not progress, leave=False):
        images, labels = batch[0].to(device), torch.as_tensor(batch[1]).to(device)
        x_adv = pgd_linf(model, images, labels, epsilon=epsilon, step_size=step_size, steps=steps,
                         random_start=random_start, mode="eval", generator=generator)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            pred = model(x_adv).argmax(1)
        model.train(was_training)
        correct += int((pred == labels).sum())
        total += labels.numel()
    return correct / total
