"""EnMAP Level 2A (surface reflectance) products: a folder of GeoTIFFs and ``*-METADATA.XML``.

Layout followed (DLR, *EnMAP HSI Level 2A Product Specification*, EN-PCV-ICD-2009-2, as the EnMAP-Box
``ImportEnmapL2AAlgorithm`` and SNAP's ``EnmapMetadata`` read it)::

    ENMAP01-____L2A-DT..._<processing time>Z/
      <name>-METADATA.XML            root <level_X>
      <name>-SPECTRAL_IMAGE.TIF      224 bands, int16 DN, CRS and geotransform of the ortho product
      <name>-QL_QUALITY_CLOUD.TIF    1 band, 1 = cloud
      <name>-QL_QUALITY_CLOUDSHADOW.TIF   1 band, 1 = cloud shadow
      (QL_PIXELMASK, QL_QUALITY_CIRRUS / HAZE / SNOW / CLASSES / TESTFLAGS: not used)

From the XML: ``base/level`` (must be L2A), ``base/temporalCoverage/startTime`` (acquired),
``specific/backgroundValue`` (nodata), and per ``specific/bandCharacterisation/bandID[@number]``:
``wavelengthCenterOfBand`` (nm), ``FWHMOfBand`` (nm), ``GainOfBand`` and ``OffsetOfBand``.
Reflectance = DN × GainOfBand + OffsetOfBand (float32). Pixels equal to the background value in every
band, and pixels flagged cloud or cloud shadow, become nodata. Cirrus, haze and snow are not masked
(snow and haze are surfaces a user may want to classify).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from geolesf.errors import DataError
from geolesf.io.sensors.common import iso_time, member, metadata_file, number, parse_xml, text
from geolesf.io.source import CubeMeta, QualityLayer, RasterCubeSource

NAME = "EnMAP L2A"
_NAME_TEST = re.compile(r"^ENMAP.*L2A", re.IGNORECASE)
SUFFIX = "-METADATA.XML"
QUALITY = (("QL_QUALITY_CLOUD", "cloud"), ("QL_QUALITY_CLOUDSHADOW", "cloud shadow"))


def matches(path: Path) -> bool:
    try:
        return metadata_file(path, SUFFIX, _NAME_TEST) is not None
    except DataError:
        return True  # several metadata files: open_product says so


def _flag_one(values: np.ndarray) -> np.ndarray:
    return values[0] == 1


def _bands(root, xml: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    bands = root.findall("specific/bandCharacterisation/bandID")
    if not bands:
        raise DataError(f"{xml}: EnMAP metadata lacks specific/bandCharacterisation/bandID")
    rows = []
    for band in bands:
        values = []
        for tag in ("wavelengthCenterOfBand", "FWHMOfBand", "GainOfBand", "OffsetOfBand"):
            node = band.find(tag)
            values.append(number(None if node is None else node.text, xml, f"band {band.get('number')} {tag}"))
        rows.append((number(band.get("number"), xml, "bandID number"), values))
    rows.sort(key=lambda r: r[0])
    columns = list(zip(*(r[1] for r in rows)))
    return [list(c) for c in columns]  # type: ignore[return-value]


def open_product(path: Path) -> RasterCubeSource:
    """The L2A reflectance cube (float32) with wavelengths, FWHM, gains/offsets, nodata and cloud masks."""
    xml = metadata_file(path, SUFFIX, _NAME_TEST)
    if xml is None:
        raise DataError(f"{path}: no EnMAP L2A metadata file (ENMAP*L2A*{SUFFIX})")
    root = parse_xml(xml, "EnMAP metadata")
    level = root.findtext("base/level")
    if level is not None and level.strip().upper() != "L2A":
        raise DataError(f"{xml}: EnMAP product level {level.strip()}, this reader takes L2A")
    wavelengths, fwhm, gains, offsets = _bands(root, xml)
    background = number(text(root, "specific/backgroundValue", xml, "EnMAP metadata"), xml, "backgroundValue")
    prefix = xml.name[: -len(SUFFIX)]
    image = member(xml.parent, prefix, "-SPECTRAL_IMAGE.TIF", "EnMAP spectral image")
    layers = []
    for suffix, label in QUALITY:
        layer = member(xml.parent, prefix, f"-{suffix}.TIF", f"EnMAP {label} layer", required=False)
        if layer is not None:
            layers.append(QualityLayer(layer, label, _flag_one, f"{suffix} == 1 → nodata"))
    meta = CubeMeta(
        band_names=[f"band {i + 1} ({w:g} nm)" for i, w in enumerate(wavelengths)], wavelengths=wavelengths,
        fwhm=fwhm, scale=gains, offset=offsets, nodata=background,
        acquired=iso_time(root.findtext("base/temporalCoverage/startTime")), sensor=NAME,
    )
    return RasterCubeSource(image, meta, layers, what="EnMAP spectral image")
