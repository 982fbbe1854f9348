"""DESIS Level 2A (surface reflectance) products: ``*-SPECTRAL_IMAGE.tif`` + ``*-METADATA.xml``.

Layout followed (DLR/Teledyne Brown, *DESIS Product Specification*, as ACOLITE's ``desis/metadata``
and the EnMAP-Box ``ImportDesisL2AAlgorithm`` read it)::

    DESIS-HSI-L2A-DT<datatake>_<tile>-<start>-V<version>-METADATA.xml
    DESIS-HSI-L2A-...-SPECTRAL_IMAGE.tif     235 bands, int16 DN (GeoTIFF, CRS + geotransform)
    DESIS-HSI-L2A-...-QUALITY.tif            pixel quality flags (0 = no flag)

From the XML, by element name wherever it sits (as ACOLITE reads it): ``startTime`` (acquired),
``backgroundValue`` (nodata) and, per ``band`` element, ``bandNumber``, ``wavelengthCenterOfBand``
(nm), ``wavelengthWidthOfBand`` (FWHM, nm), ``gainOfBand`` and ``offsetOfBand``. Reflectance =
DN × gain + offset (float32). Deviation: the bit layout of the QUALITY layer was not available to us,
so any non-zero value in its first band (any flag set) makes the pixel nodata — stricter than needed
when a flag only describes the surface.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from geolesf.errors import DataError
from geolesf.io.sensors.common import iso_time, member, metadata_file, number, parse_xml
from geolesf.io.source import CubeMeta, QualityLayer, RasterCubeSource

NAME = "DESIS L2A"
_NAME_TEST = re.compile(r"^DESIS-HSI-L2A", re.IGNORECASE)
SUFFIX = "-METADATA.xml"


def matches(path: Path) -> bool:
    try:
        return metadata_file(path, SUFFIX, _NAME_TEST) is not None
    except DataError:
        return True


def _flag_any(values: np.ndarray) -> np.ndarray:
    return values[0] != 0


def _bands(root, xml: Path) -> list[list[float]]:
    rows = []
    for band in root.iter("band"):
        number_text = band.findtext("bandNumber")
        if number_text is None:
            continue
        values = []
        for tag in ("wavelengthCenterOfBand", "wavelengthWidthOfBand", "gainOfBand", "offsetOfBand"):
            values.append(number(band.findtext(tag), xml, f"band {number_text.strip()} {tag}"))
        rows.append((number(number_text, xml, "bandNumber"), values))
    if not rows:
        raise DataError(f"{xml}: DESIS metadata has no <band> with <bandNumber>")
    rows.sort(key=lambda r: r[0])
    return [list(c) for c in zip(*(r[1] for r in rows))]


def open_product(path: Path) -> RasterCubeSource:
    """The L2A reflectance cube (float32) with wavelengths, FWHM, gains/offsets, nodata and quality mask."""
    xml = metadata_file(path, SUFFIX, _NAME_TEST)
    if xml is None:
        raise DataError(f"{path}: no DESIS L2A metadata file (DESIS-HSI-L2A*{SUFFIX})")
    root = parse_xml(xml, "DESIS metadata")
    wavelengths, fwhm, gains, offsets = _bands(root, xml)
    node = next(root.iter("backgroundValue"), None)
    if node is None:
        raise DataError(f"{xml}: DESIS metadata lacks <backgroundValue>")
    background = number(node.text, xml, "backgroundValue")
    start = next(root.iter("startTime"), None)
    prefix = xml.name[: -len(SUFFIX)]
    image = member(xml.parent, prefix, "-SPECTRAL_IMAGE.tif", "DESIS spectral image")
    quality = member(xml.parent, prefix, "-QUALITY.tif", "DESIS quality layer", required=False)
    layers = [] if quality is None else [QualityLayer(quality, "quality", _flag_any, "QUALITY band 1 != 0 → nodata")]
    meta = CubeMeta(
        band_names=[f"band {i + 1} ({w:g} nm)" for i, w in enumerate(wavelengths)], wavelengths=wavelengths,
        fwhm=fwhm, scale=gains, offset=offsets, nodata=background,
        acquired=iso_time(None if start is None else start.text), sensor=NAME,
    )
    return RasterCubeSource(image, meta, layers, what="DESIS spectral image")
