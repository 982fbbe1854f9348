"""Band selection (``data.drop_bands``): water windows, ranges, band numbers, errors, recorded selection."""

from __future__ import annotations

import numpy as np
import pytest

from geolesf.cli.argtypes import band_ranges
from geolesf.errors import ConfigError, DataError
from geolesf.io.bands import WATER_WINDOWS, apply_recorded, apply_to_cube, select_bands
from geolesf.io.hsi import read_cube
from tests.io import sensor_fixtures as fx

AVIRIS_LIKE = list(np.round(np.linspace(376.86, 2500.6, 425), 4))


def _in_windows(w: float) -> bool:
    return any(lo <= w <= hi for lo, hi in WATER_WINDOWS)


def test_water_drops_exactly_the_bands_in_the_windows():
    keep, report = select_bands(AVIRIS_LIKE, ["water"])
    dropped = [i for i, w in enumerate(AVIRIS_LIKE) if _in_windows(w)]
    assert 40 < len(dropped) < 80
    assert keep == [i for i in range(425) if i not in dropped]
    assert report["dropped_band_numbers"] == [i + 1 for i in dropped]
    assert report["wavelengths_kept"] == [AVIRIS_LIKE[i] for i in keep]
    assert report["bands_in"] == 425


def test_cli_spec_mix_of_water_and_ranges_and_numbers():
    spec = band_ranges("water,350-400,2450-2600")
    assert spec == ["water", [350.0, 400.0], [2450.0, 2600.0]]
    keep, report = select_bands(AVIRIS_LIKE, spec + [{"band_numbers": [200, 201]}])
    kept_wl = [AVIRIS_LIKE[i] for i in keep]
    assert not any(_in_windows(w) or w <= 400 or w >= 2450 for w in kept_wl)
    assert 199 not in keep and 200 not in keep
    assert [r["item"] for r in report["by_item"]][0] == "water"


def test_water_without_wavelengths_names_the_fix():
    with pytest.raises(DataError, match="has none; give a cube with wavelengths .*band_numbers") as err:
        select_bands(None, ["water"], bands=200, where="IP_200_M.mat")
    assert "\n" not in str(err.value)
    keep, _ = select_bands(None, [{"band_numbers": [1, 200]}], bands=200)
    assert keep == list(range(1, 199))


@pytest.mark.parametrize("spec,match", [
    (["steam"], "neither a band set"),
    ([[400, 300]], "LOW < HIGH"),
    ([{"band_numbers": [0]}], "band numbers from 1"),
    ([{"band_numbers": [999]}], "do not exist"),
    ([[0, 5000]], "drops all 425 bands"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        select_bands(AVIRIS_LIKE, spec)


def test_apply_to_product_cube(tmp_path):
    want = fx.aviris(tmp_path / "line")
    cube = read_cube(want["hdr"])
    out, report = apply_to_cube(cube, ["water"])
    assert out.bands == len(report["keep"]) < cube.bands
    assert out.wavelengths == report["wavelengths_kept"] and len(out.fwhm) == out.bands
    np.testing.assert_array_equal(out.data, cube.data[:, :, report["keep"]])
    same, _ = apply_to_cube(cube, None)
    assert same is cube


def test_apply_recorded_checks_band_count():
    _, report = select_bands(AVIRIS_LIKE, ["water"])
    x = np.arange(425 * 6, dtype=np.float32).reshape(425, 2, 3)
    np.testing.assert_array_equal(apply_recorded(x, report, 0, "scene.tif", "model.pt"), x[report["keep"]])
    with pytest.raises(DataError, match="scene.tif has 424 bands; the model was trained on 425-band scenes"):
        apply_recorded(x[:424], report, 0, "scene.tif", "model.pt")
    assert apply_recorded(x, None, 0, "scene.tif", "model.pt") is x
