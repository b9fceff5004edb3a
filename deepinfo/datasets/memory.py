"""Keep a deterministic data set's decoded items in memory.

Training reads every image once per epoch; for JPEG data sets (CUB-200, the CIFAR-10 JPEG copy)
decoding, cropping and resizing cost about as much as a small network's step, every epoch. The
items of these data sets do not depend on the epoch (augmentation happens on batches, in
``deepinfo.toolkit.training``), so the first read can be kept and the rest served from memory.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class InMemory(Dataset):
    """``dataset`` with each item kept after its first read (same items, same order).

    Only for data sets whose ``__getitem__`` is deterministic: a random transform would be frozen
    at its first draw. Attributes (``classes``, ``has_masks``, ``targets``...) are the wrapped
    data set's.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = self.dataset[index]
        return item

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks; guard internals against recursion
        # (pickling for DataLoader workers, half-built objects).
        if name.startswith("_") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"InMemory({self.dataset!r}, kept={len(self._items)})"
