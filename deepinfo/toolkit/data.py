"""What data a profile reads, where it comes from, and whether the copies here are intact.

``python -m deepinfo.toolkit.data --profile cpu`` (``make data PROFILE=cpu``) lists every item the
profile reads with its size and source, verifies what is present against known checksums, fetches
from the official sources what can be fetched (``--download``: CIFAR-10, CUB-200-2011, the
published CIFAR ResNets, torchvision's ImageNet weights, each checksummed on arrival), and exits
non-zero naming every item that is missing or corrupted and where to get it (ImageNet and the ISBI
volumes are placed by hand).

Checksums come from their owners where they have one (torchvision's md5s of CIFAR-10 and ImageNet,
the sha256 prefix in the name of a torch.hub checkpoint, the CUB archive's published md5); the
offline copies of ``../shared/data`` (the CIFAR-10 JPEG copy, CUB classes 1-50, ISBI) are checked
against ``data_manifest.json``: one sha256 per folder of files, written by ``--record-manifest``
from copies known to be good.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepinfo.models._checkpoint import file_digest
from deepinfo.toolkit.profile import Profile, load_profile

MANIFEST = Path(__file__).resolve().parent / "data_manifest.json"
#: Offline copies recorded in the manifest: name -> (folder under the data dir, depth of the folders digested).
OFFLINE = {"cifar10-jpeg": ("cifar10", 2), "cub200-classes1-50": ("CUB_200_2011", 2), "isbi2012": ("isbi2012", 0)}

__all__ = ["Item", "items", "check", "folder_digests", "main"]


@dataclass(frozen=True)
class Item:
    """One thing a profile reads.

    ``verify()`` returns None when the copy here is intact, else what is wrong ("missing ...",
    "corrupted ..."); ``fetch`` downloads it from its official source (None: placed by hand).
    """

    name: str
    what: str
    location: Path
    size_bytes: int  # the download (or the folder, for copies placed by hand)
    source: str
    verify: Callable[[], str | None]
    fetch: Callable[[], None] | None = None


# ------------------------------------------------------------------------------ checks


def folder_digests(root: Path, depth: int) -> dict[str, list]:
    """``{folder relative to root: [number of files, sha256 over their names and contents]}`` for
    every folder ``depth`` levels below ``root``; files above that depth (every file, for depth 0)
    get an entry of their own, so a corrupted one is named."""
    out: dict[str, list] = {}
    if depth == 0:
        groups = {p.name: [p] for p in sorted(root.iterdir()) if p.is_file()}
    else:
        groups = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            key = "/".join(rel.parts[:depth]) if len(rel.parts) > depth else rel.as_posix()
            groups.setdefault(key, []).append(path)
    for key, files in sorted(groups.items()):
        h = hashlib.sha256()
        for path in files:
            h.update(path.relative_to(root).as_posix().encode())
            h.update(bytes.fromhex(file_digest(path)))
        out[key] = [len(files), h.hexdigest()]
    return out


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def _check_offline(name: str, root: Path) -> str | None:
    expected = _manifest().get(name)
    if expected is None or name not in OFFLINE:
        return f"no recorded checksums for {name} (run --record-manifest on a good copy)"
    folder, depth = OFFLINE[name]
    if not (root / folder).is_dir():
        return f"missing: {root / folder}"
    found = folder_digests(root / folder, depth)
    bad = [k for k, v in expected.items() if found.get(k) != v]
    extra = sorted(set(found) - set(expected))
    if bad:
        detail = ", ".join(f"{k} ({found[k][0] if k in found else 0} files, {'digest differs' if k in found else 'missing'})"
                           for k in bad[:5])
        return f"corrupted: {len(bad)} of {len(expected)} folders differ from the recorded copy: {detail}"
    if extra:
        return f"corrupted: unexpected files or folders {extra[:5]}"
    return None


def _check_hash_in_name(path: Path) -> str | None:
    from deepinfo.models._checkpoint import check_hash_prefix

    if not path.is_file():
        return f"missing: {path}"
    try:
        check_hash_prefix(path)
    except ValueError as exc:
        return f"corrupted: {exc}"
    return None


def _check_md5(path: Path, md5: str) -> str | None:
    if not path.is_file():
        return f"missing: {path}"
    actual = file_digest(path, "md5")
    return None if actual == md5 else f"corrupted: md5 of {path.name} is {actual}, expected {md5}"


# ------------------------------------------------------------------------------ the catalogue


def _cifar_official(root: Path) -> Item:
    from torchvision.datasets import CIFAR10

    folder = root / "cifar10"

    def verify():
        if not (folder / CIFAR10.base_folder).is_dir():
            return f"missing: {folder / CIFAR10.base_folder}"
        ds = CIFAR10.__new__(CIFAR10)
        ds.root = str(folder)
        return None if ds._check_integrity() else "corrupted: a batch file's md5 differs from torchvision's"

    def fetch():
        CIFAR10(str(folder), train=True, download=True)

    return Item("cifar10", "CIFAR-10, the official python batches", folder / CIFAR10.base_folder, 170_498_071,
                CIFAR10.url, verify, fetch)


def _cub_official(root: Path) -> Item:
    from deepinfo.datasets.cub import CUB_FILENAME, CUB_FOLDER, CUB_MD5, CUB_URL, download_cub

    def verify():
        if (root / CUB_FILENAME).is_file():
            return _check_md5(root / CUB_FILENAME, CUB_MD5)
        listed = root / CUB_FOLDER / "images.txt"
        if not listed.is_file():
            return f"missing: {root / CUB_FOLDER} (or {CUB_FILENAME})"
        names = [line.split()[1] for line in listed.read_text().splitlines() if line.strip()]
        absent = [n for n in names if not (root / CUB_FOLDER / "images" / n).is_file()]
        if len(names) != 11_788 or absent:
            return (f"corrupted or not the official set: {len(names)} images listed (11,788 expected), "
                    f"{len(absent)} missing")
        return None

    return Item("cub200", "CUB-200-2011, all 200 classes (official archive)", root / CUB_FOLDER, 1_150_585_339,
                CUB_URL, verify, lambda: download_cub(root))


def _published(root: Path, depth: int) -> Item:
    from deepinfo.models.cifar_resnet import PUBLISHED_FILES, PUBLISHED_URL, published_checkpoint

    path = root / "checkpoints" / PUBLISHED_FILES[depth]
    hub = Path(_hub_dir()) / "checkpoints" / PUBLISHED_FILES[depth]

    def verify():
        return _check_hash_in_name(path) if path.is_file() or not hub.is_file() else _check_hash_in_name(hub)

    return Item(f"resnet{depth}-cifar10", f"published CIFAR-10 ResNet-{depth} weights", path, 1_100_000 * depth // 20,
                PUBLISHED_URL + PUBLISHED_FILES[depth], verify, lambda: published_checkpoint(depth))


def _hub_dir() -> str:
    import torch

    return torch.hub.get_dir()


def _imagenet_weights(arch: str, batch_norm: bool) -> Item:
    from deepinfo.models.vision import IMAGENET_BN_WEIGHTS, IMAGENET_WEIGHTS

    table = IMAGENET_BN_WEIGHTS if batch_norm and arch in IMAGENET_BN_WEIGHTS else IMAGENET_WEIGHTS
    weights = table[arch]()
    path = Path(_hub_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    size = int(float(weights.meta.get("_file_size", 0)) * 2**20)
    return Item(f"{arch}{'_bn' if table is IMAGENET_BN_WEIGHTS else ''}-imagenet", f"torchvision's ImageNet {arch} weights",
                path, size, weights.url, lambda: _check_hash_in_name(path),
                lambda: weights.get_state_dict(progress=True, check_hash=True))


def _isbi(root: Path) -> Item:
    from deepinfo.datasets.isbi import ISBI_URL

    return Item("isbi2012", "ISBI 2012 EM stacks (train-volume.tif, train-labels.tif, test-volume.tif)",
                root / "isbi2012", 15_000_000, f"by hand: {ISBI_URL}", lambda: _check_offline("isbi2012", root))


def _imagenet_val(root: Path) -> Item:
    from torchvision.datasets.imagenet import ARCHIVE_META

    folder = root / "imagenet"
    (val_tar, val_md5), (devkit, devkit_md5) = ARCHIVE_META["val"], ARCHIVE_META["devkit"]

    def verify():
        if (folder / val_tar).is_file():
            return _check_md5(folder / val_tar, val_md5) or _check_md5(folder / devkit, devkit_md5)
        images = list((folder / "val").rglob("*.JPEG")) if (folder / "val").is_dir() else []
        if not images:
            return f"missing: {folder / val_tar} and {folder / devkit} (or {folder / 'val'}/<wnid>/*.JPEG)"
        return None if len(images) == 50_000 else f"corrupted: {len(images)} validation images (50,000 expected)"

    return Item("imagenet-val", "ImageNet 2012 validation set (the damage notebook's non-birds)", folder,
                6_744_924_160, "by hand (an image-net.org account): " + f"{val_tar} (md5 {val_md5}) and {devkit}",
                verify)


def items(profile: str | Profile) -> list[Item]:
    """Every item ``profile`` reads, in the order a run needs them."""
    p = load_profile(profile)
    root = p.data_root()
    out: list[Item] = []
    if p.data.cifar.dataset == "cifar10" or p.damage.negatives == "cifar10":
        out.append(_cifar_official(root) if p.data.cifar10_copy == "official" else
                   Item("cifar10-jpeg", "CIFAR-10, the offline JPEG copy", root / "cifar10", 236_000_000,
                        "the project's offline copy (../shared/data/cifar10)",
                        lambda: _check_offline("cifar10-jpeg", root)))
    if p.networks.cifar.weights == "published":
        sl = p.second_line
        depths = sorted({*p.networks.cifar.depths, sl.base_depth, sl.teacher_depth, *sl.robustness_depths})
        out += [_published(root, d) for d in depths]
    if p.data.cub.dataset == "cub200":
        out.append(_cub_official(root) if p.data.cub.num_classes == 200 else
                   Item("cub200-classes1-50", "CUB-200-2011 classes 1-50, downsized (the offline copy)",
                        root / "CUB_200_2011", 48_000_000, "the project's offline copy (../shared/data/CUB_200_2011)",
                        lambda: _check_offline("cub200-classes1-50", root)))
    if p.networks.cub.weights == "imagenet":
        out += [_imagenet_weights(a, p.networks.cub.batch_norm) for a in sorted(p.cub_archs())]
    if p.data.segmentation.dataset == "isbi2012":
        out.append(_isbi(root))
    if p.damage.negatives == "imagenet":
        out.append(_imagenet_val(root))
    return out


def check(profile: str | Profile, download: bool = False) -> list[tuple[Item, str | None]]:
    """``(item, problem or None)`` for every item; with ``download``, items that can be fetched
    and are missing or corrupted are fetched (checksummed on arrival) and checked again."""
    out = []
    for item in items(profile):
        problem = item.verify()
        if problem and download and item.fetch is not None:
            print(f"  {item.name}: {problem}; downloading {item.source}", flush=True)
            try:
                item.fetch()
                problem = item.verify()
            except Exception as exc:  # a failed download: say why, go on with the others
                problem = f"download failed: {type(exc).__name__}: {exc}"
        out.append((item, problem))
    return out


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepinfo.toolkit.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--download", action="store_true", help="fetch what can be fetched (official sources)")
    ap.add_argument("--record-manifest", action="store_true",
                    help="maintainers: record the checksums of the offline copies in the data directory")
    args = ap.parse_args(argv)
    p = load_profile(args.profile)
    root = p.data_root()
    if args.record_manifest:
        manifest = {name: folder_digests(root / folder, depth) for name, (folder, depth) in OFFLINE.items()
                    if (root / folder).is_dir()}
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        print(f"recorded {', '.join(manifest)} from {root} in {MANIFEST}")
        return 0
    results = check(p, download=args.download)
    print(f"profile {p.name!r}: data directory {root}")
    if not results:
        print("  nothing to read: this profile makes its own synthetic data")
    for item, problem in results:
        print(f"  {'ok' if problem is None else 'MISSING' if problem.startswith('missing') else 'BAD':<8}"
              f"{item.name:<22} {_size(item.size_bytes):>8}  {item.what}")
        if problem:
            print(f"          {problem}\n          get it: {item.source}"
                  + ("" if item.fetch is None or args.download else f"  (make data PROFILE={p.name} DOWNLOAD=1 fetches it)"))
    failed = [i.name for i, problem in results if problem]
    if failed:
        print(f"{len(failed)} of {len(results)} items missing or corrupted: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(results)} items present and intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
