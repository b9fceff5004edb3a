"""Caltech-UCSD Birds-200-2011, read from the official text files, with bounding-box masks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.data import Dataset

from deepinfo.paths import data_dir
from deepinfo.datasets._common import MaskedItem

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB_FILENAME = "CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CUB_FOLDER = "CUB_200_2011"
CROPS = ("box", "box1.5", None)
SPLITS = ("train", "test")
_TEXT_FILES = ("images.txt", "image_class_labels.txt", "bounding_boxes.txt",
               "train_test_split.txt", "classes.txt")


@dataclass(frozen=True)
class CUBRecord:
    """One image of the index.

    Attributes:
        image_id: the official 1-based image id.
        path: the image file.
        class_id: the official 1-based class id.
        label: 0-based label among the classes of this data set.
        box: ``(x, y, w, h)`` in pixels of the original image (floats, as in the file).
    """

    image_id: int
    path: Path
    class_id: int
    label: int
    box: tuple[float, float, float, float]


class CUB200(Dataset):
    """CUB-200-2011 as ``MaskedItem(image [3,H,W] in [0,1], label, mask [H,W] = the box)``.

    Reads ``<data_dir(root)>/CUB_200_2011/`` in the official layout (``images/<class>/*.jpg``
    and ``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt`` (x y w h),
    ``train_test_split.txt`` (1 = train), ``classes.txt``), e.g. the official archive or the
    downsized offline copy of classes 001-050.

    Args:
        root: data directory (see ``deepinfo.paths.data_dir``); None for the default.
        split: ``"train"`` or ``"test"`` (the official split).
        crop: ``"box"`` crops to the bounding box; ``"box1.5"`` to the box enlarged 1.5 times in
            width and height around its centre, clipped to the image (the paper's Section 4);
            None keeps the whole image. Crop bounds are the box edges rounded to whole pixels.
        image_size: resize the (cropped) image to ``image_size x image_size`` (aspect ratio not
            kept, antialiased bilinear); None keeps its size (items then differ in size).
        classes: official 1-based class ids to keep (e.g. ``range(1, 51)``). None keeps every
            class listed in ``classes.txt`` whose image folder exists on disk (all 200 for the
            official archive, 1-50 for the offline copy).
        download: if the folder is missing, download the official ``CUB_200_2011.tgz``
            (about 1.1 GB, md5 checked) into the data directory and extract it.

    Labels are 0-based and contiguous over the kept classes, in the order of their ids. The mask
    is the bounding box in the returned image's coordinates (pixel centres inside the box): all
    True for ``crop="box"``, a centred rectangle of about 1/2.25 of the area for ``"box1.5"``
    when the enlarged box is not clipped.

    Attributes:
        classes (names, e.g. ``"Black_footed_Albatross"``), class_ids (official ids),
        num_classes, targets, records (``CUBRecord`` per item), has_masks (True), folder.
    """

    has_masks = True
    task = "classification"
    name = "cub200"

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train",
                 crop: str | None = "box", image_size: int | None = None,
                 classes: Iterable[int] | None = None, download: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
        self.split = split
        self.crop = crop
        self.image_size = image_size
        self.folder = data_dir(root) / CUB_FOLDER
        if not _is_complete(self.folder):
            if download:
                download_cub(data_dir(root))
            else:
                raise FileNotFoundError(
                    f"CUB-200-2011 not found at {self.folder}: put the official layout there "
                    f"(images/, {', '.join(_TEXT_FILES)}), set $DEEPINFO_DATA or root, or pass "
                    f"download=True to fetch {CUB_FILENAME} (about 1.1 GB, md5 {CUB_MD5}) "
                    f"from {CUB_URL}")
            if not _is_complete(self.folder):
                raise FileNotFoundError(f"{CUB_FILENAME} was extracted but {self.folder} still "
                                        f"lacks images/ or one of {_TEXT_FILES}")
        self._index(classes)

    def _index(self, classes: Iterable[int] | None) -> None:
        folder = self.folder
        names = {int(k): v for k, v in _read_table(folder / "classes.txt")}
        if classes is None:
            kept = sorted(c for c, name in names.items() if (folder / "images" / name).is_dir())
            if not kept:
                raise FileNotFoundError(f"no class image folder of classes.txt exists under "
                                        f"{folder / 'images'}")
        else:
            kept = sorted({int(c) for c in classes})
            unknown = [c for c in kept if c not in names]
            if unknown:
                raise ValueError(f"unknown CUB class ids {unknown}; classes.txt lists ids "
                                 f"{min(names)}..{max(names)} ({len(names)} classes)")
            missing = [names[c] for c in kept if not (folder / "images" / names[c]).is_dir()]
            if missing:
                raise FileNotFoundError(f"image folders missing under {folder / 'images'} for "
                                        f"{len(missing)} requested classes, e.g. {missing[:3]}")
        label_of = {c: i for i, c in enumerate(kept)}
        paths = {int(k): v for k, v in _read_table(folder / "images.txt")}
        class_of = {int(k): int(v) for k, v in _read_table(folder / "image_class_labels.txt")}
        is_train = {int(k): v == "1" for k, v in _read_table(folder / "train_test_split.txt")}
        boxes = {int(row[0]): tuple(float(v) for v in row[1:5])
                 for row in _read_rows(folder / "bounding_boxes.txt", 5)}
        want_train = self.split == "train"
        self.records = [
            CUBRecord(image_id=i, path=folder / "images" / paths[i], class_id=class_of[i],
                      label=label_of[class_of[i]], box=boxes[i])
            for i in sorted(paths)
            if class_of[i] in label_of and is_train[i] == want_train]
        self.class_ids = kept
        self.classes = [names[c].split(".", 1)[-1] for c in kept]
        self.num_classes = len(kept)
        self.targets = [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        n, k = len(getattr(self, "records", ())), getattr(self, "num_classes", 0)
        return (f"CUB200(split={self.split!r}, n={n}, num_classes={k}, "
                f"crop={self.crop!r}, image_size={self.image_size}, folder='{self.folder}')")

    def __getitem__(self, index: int) -> MaskedItem:
        from PIL import Image
        from torchvision.transforms import functional as TF

        rec = self.records[index]
        with Image.open(rec.path) as im:
            image = TF.pil_to_tensor(im.convert("RGB")).float() / 255.0
        _, height, width = image.shape
        box = snap_box(rec.box, width, height)
        x0, y0, x1, y1 = crop_region(rec.box, width, height, self.crop)
        image = image[:, y0:y1, x0:x1]
        # The box relative to the crop, in pixels (integers: the crop starts on a pixel edge).
        bx0, by0, bx1, by1 = box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0
        h, w = y1 - y0, x1 - x0
        if self.image_size is not None:
            image = TF.resize(image, [self.image_size, self.image_size], antialias=True)
            image = image.clamp(0.0, 1.0)
            h = w = self.image_size
            sx, sy = w / (x1 - x0), h / (y1 - y0)
            bx0, bx1, by0, by1 = bx0 * sx, bx1 * sx, by0 * sy, by1 * sy
        cols = torch.arange(w, dtype=torch.float32) + 0.5
        rows = torch.arange(h, dtype=torch.float32) + 0.5
        mask = (((rows >= by0) & (rows <= by1))[:, None]
                & ((cols >= bx0) & (cols <= bx1))[None, :])
        return MaskedItem(image.contiguous(), rec.label, mask)


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def snap_box(box: tuple[float, float, float, float], width: int,
             height: int) -> tuple[int, int, int, int]:
    """The box ``(x, y, w, h)`` as whole pixels ``(x0, y0, x1, y1)`` (x1, y1 exclusive).

    Edges are rounded to the nearest pixel edge and clipped to the image; at least one pixel.
    """
    x, y, w, h = box
    x0 = min(max(_round(x), 0), width - 1)
    y0 = min(max(_round(y), 0), height - 1)
    x1 = min(max(_round(x + w), x0 + 1), width)
    y1 = min(max(_round(y + h), y0 + 1), height)
    return x0, y0, x1, y1


def crop_region(box: tuple[float, float, float, float], width: int, height: int,
                crop: str | None) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, x1, y1)`` in whole pixels (x1, y1 exclusive) for a crop mode.

    ``"box"``: the snapped box. ``"box1.5"``: the box scaled by 1.5 in width and height about
    its centre, rounded and clipped to the image (it always contains the snapped box).
    None: the whole image.
    """
    if crop is None:
        return 0, 0, width, height
    if crop == "box":
        return snap_box(box, width, height)
    if crop == "box1.5":
        x, y, w, h = box
        cx, cy = x + w / 2, y + h / 2
        enlarged = (cx - 0.75 * w, cy - 0.75 * h, 1.5 * w, 1.5 * h)
        ex0, ey0, ex1, ey1 = snap_box(enlarged, width, height)
        bx0, by0, bx1, by1 = snap_box(box, width, height)
        return min(ex0, bx0), min(ey0, by0), max(ex1, bx1), max(ey1, by1)
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")


def download_cub(root: str | os.PathLike, url: str | None = None,
                 md5: str | None = None) -> Path:
    """Download ``CUB_200_2011.tgz`` into ``root``, check its md5 and extract it there.

    Returns ``root / "CUB_200_2011"``. An archive already in ``root`` with the right md5 is not
    fetched again.

    Raises:
        RuntimeError: the archive's md5 does not match (corrupted or incomplete download).
    """
    from torchvision.datasets.utils import calculate_md5, download_and_extract_archive

    url = CUB_URL if url is None else url
    md5 = CUB_MD5 if md5 is None else md5
    root = Path(root)
    archive = root / CUB_FILENAME
    try:
        download_and_extract_archive(url, download_root=str(root), filename=CUB_FILENAME,
                                     md5=md5)
    except RuntimeError as err:
        if not archive.is_file():
            raise RuntimeError(f"downloading {url} did not produce {archive}: {err}") from err
        actual = calculate_md5(str(archive))
        if actual == md5:
            raise
        raise RuntimeError(
            f"md5 mismatch for {archive}: expected {md5}, got {actual}. The download is "
            f"corrupted or incomplete; delete the file and try again, or download {url} "
            f"yourself and extract it into {root}") from err
    return root / CUB_FOLDER


def _is_complete(folder: Path) -> bool:
    return (folder / "images").is_dir() and all((folder / f).is_file() for f in _TEXT_FILES)


def _read_rows(path: Path, width: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != width:
                raise ValueError(f"{path}:{lineno}: expected {width} fields, got {line!r}")
            rows.append(parts)
    return rows


def _read_table(path: Path) -> list[tuple[str, str]]:
    return [(a, b) for a, b in _read_rows(path, 2)]
