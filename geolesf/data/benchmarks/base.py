"""What every segmentation benchmark loader shares: a list of samples and a class vocabulary."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class SampleList:
    """Base of the loaders: subclasses set ``items`` (one entry per sample) and ``class_names`` and
    define ``__getitem__(i) -> dict``; ``len``, iteration and ``num_classes`` follow from them."""

    items: list[Any]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError
