"""deepinfo: layer-wise and pixel-wise information discarding (Ma et al., ICML 2022).

    import deepinfo
    maps = deepinfo.cid(model, x, ["layer1.0", "layer3.2"])   # x: [B, C, H, W] in [0, 1]
    maps.pixelwise   # [L, B, Gh, Gw] nats
    maps.mean()      # [L, B] layer CID per image
"""

from .estimators import DEFAULT_BETA, cid, closed_form_log_sigma, concentration, ru
from .result import InfoMaps

__all__ = ["cid", "ru", "concentration", "InfoMaps", "DEFAULT_BETA", "closed_form_log_sigma"]
__version__ = "0.1.0"
