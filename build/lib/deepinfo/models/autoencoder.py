"""Auto-encoders made from the CIFAR ResNets (paper Section 4, footnote 1).

"The encoder was set as all layers of the residual network before the FC layer. The decoder was
the same as that for the computation of RU." Here the encoder is the CIFAR ResNet trunk
(:class:`~deepinfo.models.cifar_resnet.CifarResNetTrunk`: ``normalize, conv1, bn1, relu,
layer1..3``) and the decoder the RU decoder :class:`deepinfo.decoder.ResNetDecoder` (6 residual
blocks by default).

Global average pooling is left out of the encoder: "before the FC layer" could include it, but a
64-d pooled vector keeps almost nothing spatial for a decoder to invert, whereas the last
block's ``64 x 8 x 8`` map (for 32x32 images) is what the paper's upsampling decoder (transposed
convs in its first blocks) is built to invert, and every block of the encoder then carries the
same meaning as in the classifier.

Module names line up with the classifier's behind an ``encoder.`` prefix: ``encoder.layer2.1``
is the classifier's ``layer2.1``, so the same layer lists (``block_names``) serve both.
"""

from __future__ import annotations

import math
import os

from torch import Tensor, nn

from deepinfo.decoder import ResNetDecoder
from deepinfo.models.cifar_resnet import STAGE_WIDTHS, CifarResNetTrunk, resolve_weights


class CifarResNetAutoencoder(nn.Module):
    """``decoder(encoder(x))``: ``[B, 3, S, S]`` pixel-space images in [0, 1] -> reconstructions, same shape, in (0, 1).

    Attributes: ``encoder`` (:class:`CifarResNetTrunk`, output ``[B, 64, ceil(S/4), ceil(S/4)]``),
    ``decoder`` (:class:`ResNetDecoder`), ``depth``, ``image_size``.
    """

    def __init__(self, depth: int, image_size: int = 32, n_blocks: int = 6, width: int = 64) -> None:
        super().__init__()
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size must be a positive int (pixels), got {image_size!r}")
        self.depth = depth
        self.image_size = image_size
        self.encoder = CifarResNetTrunk(depth)
        # layer2 and layer3 each halve the map, rounding up (stride-2 3x3 conv with padding 1).
        side = math.ceil(math.ceil(image_size / 2) / 2)
        self.decoder = ResNetDecoder(
            (STAGE_WIDTHS[-1], side, side), (3, image_size, image_size), n_blocks=n_blocks, width=width
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def cifar_resnet_autoencoder(
    depth: int,
    encoder_weights: str | os.PathLike | None = None,
    image_size: int = 32,
    n_blocks: int = 6,
    width: int = 64,
    progress: bool = True,
) -> CifarResNetAutoencoder:
    """A CIFAR ResNet-``depth`` auto-encoder (see the module docstring for the choices).

    Args:
        depth: 6n+2 (20, 32, 44, ...).
        encoder_weights: ``None`` (random init, the paper trains the AE end to end), or the
            classifier weights to start the encoder from: ``"published"`` or a CIFAR ResNet
            checkpoint path (its ``linear.*`` entries are dropped, the rest loads strictly).
        image_size: side of the square images, in pixels.
        n_blocks, width: the decoder's residual blocks and channels.
        progress: show a download progress bar.
    """
    model = CifarResNetAutoencoder(depth, image_size=image_size, n_blocks=n_blocks, width=width)
    if encoder_weights is not None:
        state = resolve_weights(depth, encoder_weights, progress=progress)
        trunk = {k: v for k, v in state.items() if not k.startswith("linear.")}
        model.encoder.load_state_dict(trunk, strict=True)
    return model
