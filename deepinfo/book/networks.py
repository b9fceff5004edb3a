"""The trained artifacts several pages share, each a workflow job of its own.

``make reproduce`` (``workflow/Snakefile``) trains each shared network, auto-encoder and set of
RU decoders in one job::

    python -m deepinfo.book.networks --profile cpu resnet20

and the pages that read it wait for that job, so no network is trained twice, and artifacts that
do not depend on each other train side by side (one GPU each with ``JOBS=4`` on four GPUs). A
job only fills the checkpoint cache (``deepinfo.toolkit.cache``): the page then loads the same
files through the same :mod:`deepinfo.book.experiments` call. Anything a single page uses (the
adversarial pair, the damaged nets, the U-Net, ...) is trained inside that page's job.

:data:`USES` declares, like showyourwork's declared inputs, which kinds of shared artifact each
page reads; :func:`shared` turns the kinds into the jobs of one profile (a kind names one job per
depth or architecture of the profile). ``tests/test_networks.py`` checks the table against the
builders each notebook and its page module call.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable

from deepinfo.book import experiments as ex
from deepinfo.toolkit.profile import Profile, load_profile

__all__ = ["Shared", "USES", "shared", "needed_by", "main"]

# page (notebook stem) -> the kinds of shared artifact it reads
USES: dict[str, tuple[str, ...]] = {
    "00_validation": ("cifar_resnet",),
    "01_maps": ("cifar_resnet", "cub"),
    "02_layer_curves": ("cifar_resnet", "cifar_autoencoder", "cifar_decoders", "cub"),
    "03_beta": ("cifar_resnet",),
    "04_rescaling": ("cub",),
    "05_concentration_accuracy": ("cub",),
    "06_descriptive_accuracy": ("cub",),
    "08_compression": ("cub_compressed", "cifar_compressed"),
    "09_robustness": ("cifar_resnet", "cub_compressed", "cifar_compressed"),
    "10_distillation": ("cifar_resnet", "cub"),
    "14_decoders": ("cifar_resnet", "cifar_decoders"),
}


@dataclass(frozen=True)
class Shared:
    """One shared artifact of a profile.

    Attributes:
        name: the job's name (``resnet20``, ``resnet20-ae-decoders``, ``cub-vgg16``, ...).
        kind: the :data:`USES` kind it belongs to.
        build: trains it, or loads it from the cache when it is there.
        after: the names of the shared artifacts it is built from (their jobs run first).
    """

    name: str
    kind: str
    build: Callable[[], object] = field(repr=False, compare=False)
    after: tuple[str, ...] = ()


def _decoders(p: Profile, trained: Callable[[], ex.Trained], depth: int, prefix: str = "") -> None:
    """Page 02's RU decoders of one CIFAR ResNet-``depth`` (a classifier, or an auto-encoder whose
    trunk sits under ``prefix``): one per layer its ``decoder.layers`` picks."""
    net = trained()
    train = ex.cifar_data(p, "train")
    for layer in ex.decoder_layers(p, net.model, ex.layers_for(p, f"resnet{depth}", net.model, prefix=prefix)):
        ex.trained_decoder(p, net, layer, train, progress=True)


def shared(profile) -> dict[str, Shared]:
    """The shared artifacts of ``profile`` (a name, a .toml path or a loaded profile), by name."""
    p = profile if isinstance(profile, Profile) else load_profile(profile)
    out: list[Shared] = []
    depths = list(dict.fromkeys([*p.networks.cifar.depths, p.second_line.base_depth, p.second_line.teacher_depth]))
    for d in depths:
        out.append(Shared(f"resnet{d}", "cifar_resnet", lambda d=d: ex.cifar_resnet_model(p, d)))
    for d in p.networks.cifar.depths:
        classifier = lambda d=d: ex.cifar_resnet_model(p, d)  # noqa: E731
        autoencoder = lambda d=d: ex.cifar_autoencoder_model(p, d)  # noqa: E731
        out += [Shared(f"resnet{d}-ae", "cifar_autoencoder", autoencoder),
                Shared(f"resnet{d}-decoders", "cifar_decoders", lambda c=classifier, d=d: _decoders(p, c, d),
                       after=(f"resnet{d}",)),
                Shared(f"resnet{d}-ae-decoders", "cifar_decoders",
                       lambda a=autoencoder, d=d: _decoders(p, a, d, prefix="encoder."), after=(f"resnet{d}-ae",))]
    archs = list(dict.fromkeys([*p.networks.cub.archs, p.compression.arch]))
    for arch in archs:
        out.append(Shared(f"cub-{arch}", "cub", lambda a=arch: ex.cub_model(p, a)))
    out += [Shared("cub-compressed", "cub_compressed", lambda: ex.compressed_models(p),
                   after=(f"cub-{p.compression.arch}",)),
            Shared("cifar-compressed", "cifar_compressed", lambda: ex.cifar_compressed_models(p),
                   after=(f"resnet{p.second_line.base_depth}",))]
    return {s.name: s for s in out}


def needed_by(profile, page: str) -> list[str]:
    """The shared artifacts ``page`` (a notebook stem) waits for, in build order."""
    kinds = USES.get(page, ())
    return [s.name for s in shared(profile).values() if s.kind in kinds]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m deepinfo.book.networks",
                                 description="Train (or load from the cache) the shared networks of a profile.")
    ap.add_argument("--profile", default="smoke", help="smoke (default), cpu, paper or a .toml path")
    ap.add_argument("names", nargs="*", help="shared artifacts to build (default: list them)")
    args = ap.parse_args(argv)
    items = shared(args.profile)
    if not args.names:
        for s in items.values():
            print(f"{s.name:<24} {s.kind:<18} after: {', '.join(s.after) or '-'}")
        return
    unknown = [n for n in args.names if n not in items]
    if unknown:
        raise SystemExit(f"no shared artifact {unknown} in profile {args.profile!r}; there are: {', '.join(items)}")
    from deepinfo.book.reproduce import gpu_slot

    with gpu_slot():  # one GPU of its own, as a notebook job has
        for name in args.names:
            print(f"{name}: building (or loading from the cache) ...", flush=True)
            items[name].build()
            print(f"{name}: ready", flush=True)


if __name__ == "__main__":
    main()
