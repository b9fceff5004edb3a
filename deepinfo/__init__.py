"""deepinfo: layer-wise and pixel-wise information discarding (Ma et al., ICML 2022).

    import deepinfo
    model = deepinfo.wrap(net, mean, std)                     # a model that takes pixels in [0, 1]
    maps = deepinfo.cid(model, x, ["model.layer1", "model.layer3"])   # x: [B, C, H, W] in [0, 1]
    maps.pixelwise   # [L, B, Gh, Gw] nats
    maps.mean()      # [L, B] layer CID per image
    feats = deepinfo.features(model, x, "model.layer3")      # {name: [B, ...]}
    fast = deepinfo.Settings(method="linear", grid=16)        # one frozen set of settings
    maps = deepinfo.cid(model, x, "model.layer3", fast, seed=1)   # ... with overrides by name

The command line does the same on files: ``deepinfo maps --help``.
"""

from deepinfo._features import features
from deepinfo.estimators import DEFAULT_BETA, cid, closed_form_log_sigma, concentration, ru
from deepinfo.models.normalize import wrap
from deepinfo.result import InfoMaps
from deepinfo.settings import Settings

__all__ = ["cid", "ru", "concentration", "features", "wrap", "InfoMaps", "Settings", "DEFAULT_BETA", "closed_form_log_sigma"]
__version__ = "0.1.0"
