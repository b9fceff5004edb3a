"""Attribution baselines the paper compares CID and RU with: one call, any layer.

    from deepinfo.attribution.baselines import attribute, to_input_size
    sal = attribute("gradient", model, x)                      # [B, H, W], input space
    gc = attribute("gradcam", model, x, layer="layer3")         # [B, h, w], layer resolution
    gc224 = to_input_size(gc, x.shape[-2:])                     # [B, H, W]

``x`` is a batch of pixel-space images ``[B, C, H, W]`` in [0, 1]; the model normalizes them
itself (SPEC section 1) and returns logits ``[B, K]``. A layer is a module name from
``model.named_modules()``.

Methods and how their maps are reduced over channels (``reduce=`` overrides it):

==================== ============================================ ======================
method               value per unit                               default reduction
==================== ============================================ ======================
``gradient``         d score / d unit (Simonyan et al., 2013)      max |.| over channels
``gradient_x_input`` unit * d score / d unit (Shrikumar et al.)    sum over channels
``guided_backprop``  guided gradient (Springenberg et al., 2014)   max |.| over channels
``gradcam``          ReLU(sum_k mean_hw(dS/dA_k) A_k) (Selvaraju)  (one map already)
``cam``              sum_k w[target, k] A_k (Zhou et al., 2016)    (one map already)
``lrp``              LRP relevance (zennit, see below)             sum over channels
==================== ============================================ ======================

"score" is the target logit (``target=None``: the predicted class). Without ``layer`` the first
four and ``lrp`` are maps over input pixels ``[B, H, W]``; with ``layer`` they are taken at that
module's output (gradient / gradient x activation / guided gradient / relevance of the feature)
and returned at its resolution ``[B, h, w]``. Grad-CAM and CAM are always layer maps; with
``layer=None`` they use the last feature map before the classifier (see `default_layer`). CAM is
only defined at the feature map that global average pooling hands to the final linear layer; any
other layer raises ``ValueError``.

Implementation: input-space gradient and gradient x input, and layer gradient, gradient x
activation and Grad-CAM are Captum's (Saliency, InputXGradient, LayerGradientXActivation,
LayerGradCam). Guided backprop is done here because Captum's only rewrites ``nn.ReLU`` modules
and silently ignores ``F.relu`` calls (the CIFAR ResNet uses those): every ReLU call, module or
functional, is routed through a guided ReLU during the forward. CAM is done by hand.

LRP uses zennit, not Captum: Captum's LRP only sees modules, so at a residual addition
(``out + shortcut(x)``) the gradient copies the full relevance into both branches and relevance
is not conserved (tests/test_baselines.py shows it). Here

* every addition of two tensors that both carry gradient (a residual sum, in any architecture,
  written ``a + b``, ``a += b``, ``torch.add``) is propagated with zennit's ``Norm`` rule
  (relevance split in proportion to each summand's contribution, as zennit's ``ResNetCanonizer``
  does for torchvision blocks only), so option-A CIFAR shortcuts and torchvision blocks are both
  handled without knowing their classes;
* BatchNorm layers that directly follow a conv/linear are merged into it (zennit
  ``SequentialMergeBatchNorm``);
* the default composite is ``EpsilonGammaBox`` (ZBox on the first conv, Gamma(0.25) on the other
  convs, Epsilon on linear layers; Montavon et al. 2019's recommendation for image CNNs). The
  model sees pixels in [0, 1] but its first conv sees ``normalize(x)``, so the ZBox bounds are
  given in that normalized space: ``low = normalize(0)``, ``high = normalize(1)`` per channel.
  The ``normalize`` module itself gets zennit's ``Pass`` rule: it maps each pixel to one value,
  so the relevance of a normalized pixel is the relevance of the raw pixel (its gradient would
  instead rescale relevance by 1/std and break conservation). Other composites:
  ``"epsilon_plus_flat"``, ``"epsilon_plus"``, ``"epsilon"`` (LRP-epsilon everywhere) or a zennit
  ``Composite`` instance;
* the output relevance is the target logit (one-hot times the score), so with zero biases the
  input relevance sums to the score (conservation). Biases, including those BatchNorm merging
  creates, absorb their share of relevance, and epsilon stabilizers absorb a little more.

The model is left as found: every module's train/eval flag and every parameter's
``requires_grad`` are restored, Captum's and zennit's hooks and zennit's BatchNorm merge are
undone, and parameters are never written. Computation runs in eval mode with frozen parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from deepinfo._features import ModelGuard, resolve_layers
from deepinfo._images import check_images

METHODS = ("gradient", "gradient_x_input", "guided_backprop", "gradcam", "cam", "lrp")
REDUCTIONS = ("sum", "abs_sum", "max_abs", "none")
DEFAULT_REDUCTION = {
    "gradient": "max_abs",
    "gradient_x_input": "sum",
    "guided_backprop": "max_abs",
    "lrp": "sum",
}
LRP_COMPOSITES = ("epsilon_gamma_box", "epsilon_plus_flat", "epsilon_plus", "epsilon")


def attribute(
    method: str,
    model: nn.Module,
    x: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    layer: str | None = None,
    *,
    reduce: str | None = None,
    composite: str | object = "epsilon_gamma_box",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    normalize: str | None = "auto",
) -> Tensor:
    """Attribution map of ``method`` for the target logit, at the input or at ``layer``.

    Args:
        method: one of ``"gradient"``, ``"gradient_x_input"``, ``"guided_backprop"``,
            ``"gradcam"``, ``"cam"``, ``"lrp"`` (see the module docstring).
        model: a classifier taking pixel-space images ``[B, C, H, W]`` in [0, 1] and returning
            logits ``[B, K]``; left exactly as found.
        x: images ``[B, C, H, W]``, finite.
        target: class per image: ``None`` (the predicted class), one int for all images, or a
            sequence / tensor of ``B`` ints.
        layer: a module name from ``model.named_modules()``, or ``None`` for input-space maps
            (Grad-CAM and CAM: the default feature map, see `default_layer`). The module must run
            once per forward and its output must not be modified in place afterwards (e.g. not
            torchvision's shared ``BasicBlock.relu`` or ``bn2``, whose output ``+=`` rewrites;
            use the block instead).
        reduce: channel reduction, ``None`` for the method's default (module docstring),
            ``"sum"``, ``"abs_sum"``, ``"max_abs"`` or ``"none"`` (the full ``[B, C, ...]``
            map, which also allows non-spatial layers such as a linear layer's ``[B, K]``).
            Not accepted for Grad-CAM and CAM, which produce one map.
        composite: LRP only: ``"epsilon_gamma_box"`` (default), ``"epsilon_plus_flat"``,
            ``"epsilon_plus"``, ``"epsilon"``, or a zennit ``Composite`` (its own canonizers are
            used; the ``normalize`` module still gets ``Pass`` unless the composite maps it).
        epsilon: LRP only: the Epsilon rule's stabilizer.
        gamma: LRP only: the Gamma rule's gamma (``"epsilon_gamma_box"``).
        normalize: LRP only: where the model normalizes its input, which sets the ZBox bounds and
            gets the ``Pass`` rule. ``"auto"`` finds the module named ``normalize`` (as
            :func:`deepinfo.wrap` and every :mod:`deepinfo.models` network name it), else the one
            ``Normalize`` module of the model (deepinfo's or torchvision's, whatever its name, e.g.
            ``"0"`` in ``nn.Sequential(Normalize(...), net)``); a module name says where it is;
            ``None`` says the model takes pixels in [0, 1] straight into its first layer. When
            ``"auto"`` finds none, LRP raises instead of guessing. The other methods differentiate
            through the model and need no such knowledge.

    Returns:
        ``[B, H, W]`` for input-space maps, ``[B, h, w]`` for layer maps (float, on ``x``'s
        device); with ``reduce="none"`` the unreduced map. Units: score per pixel (gradient:
        score per pixel value; LRP: score, summing to about the score).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; accepted: {list(METHODS)}")
    check_images(x, "x", pixel_range="ignore")
    if reduce is not None and reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be None or one of {list(REDUCTIONS)}, got {reduce!r}")
    if method in ("gradcam", "cam") and reduce is not None:
        raise ValueError(f"{method} produces one map per image; reduce must be None, got {reduce!r}")
    if layer is not None:
        if not isinstance(layer, str):
            raise ValueError(f"layer must be one module name (a str) or None, got {layer!r}")
        resolve_layers(model, layer)  # KeyError listing the nearest valid names
    x = x.detach()
    reduce = reduce or DEFAULT_REDUCTION.get(method)

    with _untouched(model):
        trace = _trace(model, x[:1])
        targets = _targets(model, x, target, trace.num_classes)
        if method in ("gradcam", "cam") and layer is None:
            layer = default_layer(model, x[:1], cam=method == "cam", _trace_cache=trace)
        if layer is not None:
            trace.check_layer(layer, spatial=method in ("gradcam", "cam") or reduce != "none")
        if method == "gradient":
            raw = _gradient(model, x, targets, layer, times_input=False)
        elif method == "gradient_x_input":
            raw = _gradient(model, x, targets, layer, times_input=True)
        elif method == "guided_backprop":
            raw = _guided_backprop(model, x, targets, layer)
        elif method == "gradcam":
            return _gradcam(model, x, targets, layer)
        elif method == "cam":
            return _cam(model, x, targets, layer, trace)
        else:
            raw = _lrp(model, x, targets, layer, composite, epsilon, gamma, normalize)
    return _reduce(raw, reduce)


def to_input_size(maps: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Upsample (or downsample) maps ``[B, h, w]`` (or one ``[h, w]``) to ``size = (H, W)``.

    ``mode``: ``"bilinear"`` (``align_corners=False``, the usual way CAM / Grad-CAM maps are
    shown over the image) or ``"nearest"`` (keeps cell-constant maps such as a CID grid
    piecewise constant). Returns float ``[B, H, W]`` (``[H, W]`` for a 2-d input).
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if not torch.is_tensor(maps) or maps.dim() not in (2, 3):
        shape = tuple(maps.shape) if torch.is_tensor(maps) else type(maps).__name__
        raise ValueError(f"maps must be a tensor [B, h, w] or [h, w], got {shape}")
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive entries, got {size}")
    single = maps.dim() == 2
    m = maps[None, None] if single else maps[:, None]
    m = m.float() if not m.is_floating_point() else m
    if tuple(m.shape[-2:]) != size:
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        m = F.interpolate(m, size=size, mode=mode, **kwargs)
    return m[0, 0] if single else m[:, 0]


def default_layer(model: nn.Module, x: Tensor, cam: bool = False, _trace_cache=None) -> str:
    """The feature map Grad-CAM / CAM use when ``layer=None``.

    Grad-CAM: the last module (in order of completion) whose output is a ``[B, C, h, w]`` map
    with ``h * w > 1``, that runs once and is not modified in place (torchvision ResNet:
    ``"layer4"``; CIFAR ResNet: ``"layer3"``; VGG: ``"avgpool"``, equal to ``features`` at 224 px).
    CAM (``cam=True``): the same among the modules whose spatial mean is the input of the final
    linear layer. Raises ``ValueError`` when there is none. ``x``: one or more images.
    """
    trace = _trace_cache
    if trace is None:
        check_images(x, "x", pixel_range="ignore")
        with _untouched(model):
            trace = _trace(model, x[:1].detach())
    names = [n for n in trace.order if trace.usable(n) and trace.spatial_size(n) > 1]
    if cam:
        names = [n for n in names if trace.cam_compatible(n)]
    if not names:
        what = "feature map whose global average pool feeds the final linear layer" if cam else (
            "module with a [B, C, h, w] output (h*w > 1) that runs once")
        raise ValueError(f"found no {what}; pass layer= explicitly")
    return names[-1]


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; modes, requires_grad and the hook tables after.

    The hook tables are restored as a safety net: if an attribution library raised half way,
    whatever it registered is dropped (each table is reset to the entries it had before).
    """
    tables = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
              "_forward_pre_hooks_with_kwargs")
    saved = [(m, t, dict(getattr(m, t))) for m in model.modules() for t in tables if hasattr(m, t)]
    try:
        with ModelGuard(model):
            yield
    finally:
        for m, t, before in saved:
            table = getattr(m, t)
            for key in [k for k in table if k not in before]:
                del table[key]


@dataclass
class _Trace:
    """What one forward of one image shows about the model's modules (for checks and defaults)."""

    order: list[str] = field(default_factory=list)          # completion order, first call
    calls: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple | None] = field(default_factory=dict)
    inplace: dict[str, bool] = field(default_factory=dict)  # output rewritten after the module ran
    outputs: dict[str, Tensor] = field(default_factory=dict)
    fc_name: str | None = None                              # final linear layer, if it gives the logits
    fc_input: Tensor | None = None
    num_classes: int = 0

    def usable(self, name: str) -> bool:
        return self.calls.get(name, 0) == 1 and self.shapes.get(name) is not None and not self.inplace[name]

    def spatial_size(self, name: str) -> int:
        shape = self.shapes.get(name)
        return shape[2] * shape[3] if shape is not None and len(shape) == 4 else 0

    def cam_compatible(self, name: str) -> bool:
        shape = self.shapes.get(name)
        if self.fc_input is None or shape is None or len(shape) != 4 or shape[1] != self.fc_input.shape[1]:
            return False
        pooled = self.outputs[name].mean(dim=(2, 3))
        scale = float(self.fc_input.abs().max()) + 1e-12
        return bool(torch.allclose(pooled, self.fc_input, rtol=1e-4, atol=1e-5 * scale))

    def check_layer(self, name: str, spatial: bool) -> None:
        calls = self.calls.get(name, 0)
        if calls == 0:
            raise ValueError(f"layer {name!r} does not run in the model's forward pass")
        if calls > 1:
            raise ValueError(
                f"layer {name!r} runs {calls} times in one forward pass (a shared module, such as "
                "torchvision's BasicBlock.relu); its output is ambiguous: choose a module that runs "
                "once, e.g. the enclosing block")
        if self.shapes[name] is None:
            raise ValueError(f"layer {name!r} does not return a single tensor")
        if self.inplace[name]:
            raise ValueError(
                f"the output of layer {name!r} is modified in place later in the forward pass (e.g. "
                "torchvision's bn2 by `out += identity`), so its value is not what the next layers "
                "see; choose the enclosing block or the next module")
        if spatial and len(self.shapes[name]) != 4:
            raise ValueError(
                f"layer {name!r} outputs shape {self.shapes[name]}, not a spatial map [B, C, h, w]; "
                "pass reduce='none' to get the unreduced attribution of a non-spatial layer")


def _trace(model: nn.Module, x1: Tensor) -> _Trace:
    """One forward of one image with a hook on every module (batch 1 keeps the stored outputs small)."""
    trace = _Trace()
    versions: dict[str, int] = {}
    linears: list[tuple[str, Tensor, Tensor]] = []
    handles = []

    def make_hook(name: str, is_linear: bool):
        def hook(module, inputs, output):
            trace.calls[name] = trace.calls.get(name, 0) + 1
            if trace.calls[name] > 1:
                return
            trace.order.append(name)
            if torch.is_tensor(output):
                trace.shapes[name] = tuple(output.shape)
                trace.outputs[name] = output
                versions[name] = output._version
            else:
                trace.shapes[name] = None
            if is_linear and torch.is_tensor(output) and inputs and torch.is_tensor(inputs[0]):
                linears.append((name, inputs[0].flatten(1), output))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name, isinstance(module, nn.Linear))))
        with torch.no_grad():
            out = model(x1)
    finally:
        for h in handles:
            h.remove()
    if not torch.is_tensor(out) or out.dim() != 2:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"the model must return logits [B, K] for a classification target, got {shape}")
    trace.num_classes = out.shape[1]
    for name in trace.order:
        trace.inplace[name] = name in versions and trace.outputs[name]._version != versions[name]
    if linears:
        name, fc_in, fc_out = linears[-1]
        if fc_out is out or (fc_out.shape == out.shape and torch.allclose(fc_out, out)):
            trace.fc_name, trace.fc_input = name, fc_in
    return trace


def _targets(model: nn.Module, x: Tensor, target, num_classes: int) -> Tensor:
    """Target class per image, ``[B]`` long on ``x``'s device."""
    b = x.shape[0]
    if target is None:
        with torch.no_grad():
            return model(x).argmax(dim=1)
    t = torch.as_tensor(target, device=x.device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"target must be class indices (ints), got dtype {t.dtype}")
    t = t.long()
    if t.dim() == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"target must be None, one int or {b} ints (one per image), got shape {tuple(t.shape)}")
    if bool((t < 0).any()) or bool((t >= num_classes).any()):
        raise ValueError(f"target classes must lie in [0, {num_classes}), got {t.tolist()}")
    return t.clone()


def _reduce(raw: Tensor, how: str) -> Tensor:
    if how == "none":
        return raw
    if how == "sum":
        return raw.sum(dim=1)
    if how == "abs_sum":
        return raw.abs().sum(dim=1)
    return raw.abs().amax(dim=1)


@contextlib.contextmanager
def _capture(model: nn.Module, name: str | None) -> Iterator[dict]:
    """``{"out": tensor}``: the output of module ``name`` during the forward inside (nothing for None)."""
    store: dict = {}
    if name is None:
        yield store
        return
    module = dict(model.named_modules())[name]
    handle = module.register_forward_hook(lambda m, i, o: store.setdefault("out", o))
    try:
        yield store
    finally:
        handle.remove()


def _gradient(model: nn.Module, x: Tensor, t: Tensor, layer: str | None, times_input: bool) -> Tensor:
    from captum.attr import InputXGradient, LayerGradientXActivation, Saliency

    xin = x.clone().requires_grad_(True)
    if layer is None:
        method = InputXGradient(model) if times_input else Saliency(model)
        kwargs = {} if times_input else {"abs": False}
        return method.attribute(xin, target=t, **kwargs).detach()
    module = dict(model.named_modules())[layer]
    method = LayerGradientXActivation(model, module, multiply_by_inputs=times_input)
    return method.attribute(xin, target=t).detach()


def _gradcam(model: nn.Module, x: Tensor, t: Tensor, layer: str) -> Tensor:
    from captum.attr import LayerGradCam

    module = dict(model.named_modules())[layer]
    xin = x.clone().requires_grad_(True)
    maps = LayerGradCam(model, module).attribute(xin, target=t, relu_attributions=True)
    return maps.detach()[:, 0]


def _cam(model: nn.Module, x: Tensor, t: Tensor, layer: str, trace: _Trace) -> Tensor:
    if trace.fc_name is None:
        raise ValueError(
            "CAM needs a final linear layer that produces the logits (after global average "
            "pooling); this model has none (e.g. VGG / AlexNet classifiers with several FC layers)")
    if not trace.cam_compatible(layer):
        raise ValueError(
            f"CAM is only defined at the feature map [B, K, h, w] whose global average pool is the "
            f"input of the final linear layer {trace.fc_name!r} (K = {trace.fc_input.shape[1]}); "
            f"layer {layer!r} (output {trace.shapes[layer]}) is not; use Grad-CAM at other layers")
    weight = dict(model.named_modules())[trace.fc_name].weight
    with torch.no_grad(), _capture(model, layer) as cap:
        model(x)
        feat = cap["out"]
        # CAM_c(i, j) = sum_k w[c, k] A_k(i, j); its spatial mean plus the bias is the logit.
        return torch.einsum("bkhw,bk->bhw", feat, weight[t].to(feat.dtype)).detach()


# ----------------------------------------------------------------------------- guided backprop


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


class _GuidedReLUInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x.clamp_(min=0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


_RELU_OUT = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}


class _GuidedReLUs(TorchFunctionMode):
    """During the forward inside, every ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``.relu()``,
    in place or not) on a tensor that carries gradient becomes a guided ReLU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_OUT or func in _RELU_INPLACE:
            x = args[0] if args else kwargs.get("input")
            if torch.is_tensor(x) and x.requires_grad:
                inplace = func in _RELU_INPLACE or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
                return (_GuidedReLUInplace if inplace else _GuidedReLU).apply(x)
        return func(*args, **kwargs)


def _guided_backprop(model: nn.Module, x: Tensor, t: Tensor, layer: str | None) -> Tensor:
    xin = x.clone().requires_grad_(True)
    with _capture(model, layer) as cap:
        with torch.enable_grad(), _GuidedReLUs():
            out = model(xin)
        score = out.gather(1, t[:, None]).sum()
        wrt = xin if layer is None else cap["out"]
        (grad,) = torch.autograd.grad(score, wrt)
    return grad.detach()


# ----------------------------------------------------------------------------- LRP


class _NormSum(torch.autograd.Function):
    """``a + b`` whose backward splits the incoming relevance ``R`` as ``a / (a + b) * R`` and
    ``b / (a + b) * R`` (zennit's ``Norm`` rule on a ``Sum``; ``a + b`` stabilized)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, stabilizer: float) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.stabilizer = stabilizer
        return a + b

    @staticmethod
    def backward(ctx, rel: Tensor):
        from zennit.core import stabilize

        a, b = ctx.saved_tensors
        share = rel / stabilize(a + b, ctx.stabilizer)
        return a * share, b * share, None


class _NormSumInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, stabilizer: float) -> Tensor:
        ctx.save_for_backward(a.clone(), b)
        ctx.stabilizer = stabilizer
        a.add_(b)
        ctx.mark_dirty(a)
        return a

    backward = _NormSum.backward


_ADD_OUT = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}
_ADD_INPLACE = {torch.Tensor.add_, torch.Tensor.__iadd__}


class _ResidualSums(TorchFunctionMode):
    """During the forward inside, ``a + b`` of two same-shape tensors that both carry gradient
    (a residual join) is a `_NormSum`, so LRP splits relevance instead of copying it."""

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__()
        self.stabilizer = stabilizer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in _ADD_OUT or func in _ADD_INPLACE) and len(args) == 2 and not kwargs:
            a, b = args
            if (torch.is_tensor(a) and torch.is_tensor(b) and a.requires_grad and b.requires_grad
                    and a.shape == b.shape):
                fn = _NormSumInplace if func in _ADD_INPLACE else _NormSum
                return fn.apply(a, b, self.stabilizer)
        return func(*args, **kwargs)


def _find_normalize(model: nn.Module, normalize: str | None = "auto") -> nn.Module | None:
    """The model's input normalization for LRP (see ``attribute``'s ``normalize``)."""
    if normalize is None:
        return None
    modules = dict(model.named_modules())
    if normalize != "auto":
        resolve_layers(model, normalize)  # KeyError with the nearest valid names
        return modules[normalize]
    for name, module in modules.items():
        if name and name.split(".")[-1] == "normalize":
            return module
    # by type: deepinfo.models.Normalize or torchvision.transforms.Normalize (both nn.Modules)
    typed = [n for n, m in modules.items() if n and type(m).__name__ == "Normalize"]
    if len(typed) == 1:
        return modules[typed[0]]
    found = f"several Normalize modules ({typed})" if typed else "no module named 'normalize' and no Normalize module"
    raise ValueError(
        f"LRP needs to know where {type(model).__name__} normalizes its input (it sets the ZBox bounds and the Pass "
        f"rule), and found {found}. Pass normalize='<module name>', or normalize=None if the model takes pixels in "
        "[0, 1] straight into its first layer, or wrap the network with deepinfo.wrap(net, mean, std).")


def _lrp_composite(model: nn.Module, x: Tensor, composite, epsilon: float, gamma: float, normalize="auto"):
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, LayerMapComposite, layer_map_base
    from zennit.core import Composite
    from zennit.rules import Epsilon, Pass
    from zennit.types import Convolution, Linear

    norm = _find_normalize(model, normalize)
    if isinstance(composite, str):
        if composite not in LRP_COMPOSITES:
            raise ValueError(f"unknown LRP composite {composite!r}; accepted: {list(LRP_COMPOSITES)} "
                             "or a zennit Composite")
        canonizers = [SequentialMergeBatchNorm()]
        if composite == "epsilon_gamma_box":
            # ZBox bounds in the space the first conv sees: the normalized [0, 1] pixel range.
            with torch.no_grad():
                low = norm(torch.zeros_like(x)) if norm is not None else torch.zeros_like(x)
                high = norm(torch.ones_like(x)) if norm is not None else torch.ones_like(x)
            built = EpsilonGammaBox(low=low, high=high, epsilon=epsilon, gamma=gamma, canonizers=canonizers)
        elif composite == "epsilon_plus_flat":
            built = EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
        elif composite == "epsilon_plus":
            built = EpsilonPlus(epsilon=epsilon, canonizers=canonizers)
        else:
            rules = [(Convolution, Epsilon(epsilon=epsilon)), (Linear, Epsilon(epsilon=epsilon))]
            built = LayerMapComposite(layer_map=layer_map_base() + rules, canonizers=canonizers)
    elif isinstance(composite, Composite):
        built = composite
    else:
        raise ValueError(f"composite must be one of {list(LRP_COMPOSITES)} or a zennit Composite, "
                         f"got {type(composite).__name__}")
    if norm is not None:
        base_map = built.module_map

        def module_map(ctx, name, module):
            hook = base_map(ctx, name, module)
            return Pass() if hook is None and module is norm else hook

        built.module_map = module_map
    return built


def _lrp(model: nn.Module, x: Tensor, t: Tensor, layer: str | None, composite, epsilon: float,
         gamma: float, normalize="auto") -> Tensor:
    built = _lrp_composite(model, x, composite, epsilon, gamma, normalize)
    base_map = built.module_map
    xin = x.clone().requires_grad_(True)
    try:
        with built.context(model), _capture(model, layer) as cap:
            with torch.enable_grad(), _ResidualSums():
                out = model(xin)
            # Output relevance: the target logit (so conservation reads "input sum = score").
            init = torch.zeros_like(out).scatter_(1, t[:, None], out.detach().gather(1, t[:, None]))
            wrt = xin if layer is None else cap["out"]
            (rel,) = torch.autograd.grad(out, wrt, grad_outputs=init)
    finally:
        built.module_map = base_map
    return rel.detach()
