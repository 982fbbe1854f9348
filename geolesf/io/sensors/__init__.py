"""Readers of imaging-spectrometer products as their agencies distribute them.

One module per product; each has ``NAME``, ``matches(path) -> bool`` (cheap: names and layout, no
pixel read) and ``open_product(path) -> CubeSource`` (:mod:`geolesf.io.source`). :func:`detect` finds
the reader for a path — the product folder, its metadata file or (AVIRIS) its ENVI header — and
:func:`geolesf.io.hsi.read_cube` / :func:`geolesf.io.source.open_cube` use it before any other reader.

=================  ==============================================  =====================================
product            what is given                                   module
=================  ==============================================  =====================================
EnMAP L2A          folder or ``*-METADATA.XML``                     :mod:`~geolesf.io.sensors.enmap`
DESIS L2A          folder or ``*-METADATA.xml``                     :mod:`~geolesf.io.sensors.desis`
PRISMA L2D         ``PRS_L2D_*.he5``                                :mod:`~geolesf.io.sensors.prisma`
AVIRIS-NG / -3 L2  folder, ENVI header or data file                 :mod:`~geolesf.io.sensors.aviris`
=================  ==============================================  =====================================

``docs/sensors.md`` says what each reader takes from where and which format documents it follows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULES = ("enmap", "desis", "prisma", "aviris")


@dataclass(frozen=True)
class Product:
    """A product reader found by :func:`detect`."""

    name: str
    module: Any

    def open(self, path: str | Path) -> Any:
        return self.module.open_product(Path(path))


def detect(path: str | Path) -> Product | None:
    """The product reader for ``path`` (folder, metadata file, header), or None for a plain file."""
    path = Path(path)
    for name in MODULES:
        module = importlib.import_module(f"geolesf.io.sensors.{name}")
        if module.matches(path):
            return Product(module.NAME, module)
    return None
