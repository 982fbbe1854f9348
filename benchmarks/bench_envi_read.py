"""ENVI read speed: GDAL's ENVI driver vs geolesf's memory map (GDAL still gives the georeferencing).

The whole Indian Pines cube (145 × 145 × 200, written as int16 ENVI in bsq / bil / bip) is read with
``rasterio``'s ``read()`` through GDAL's ENVI driver and with :func:`geolesf.io.envi.read_envi`; and a
64 × 64 window with :func:`geolesf.io.hsi.open_cube`. Best of ``--repeats`` runs, page cache warm.

    python benchmarks/bench_envi_read.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import scipy.io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "envi_read.json"
LAYOUTS = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from geolesf.io.envi import read_envi
    from geolesf.io.hsi import open_cube

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cube = scipy.io.loadmat(ROOT / "geolesf" / "embedded" / "indian_pines" / "IP_200_M.mat")["data_M"].astype("<i2")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout in LAYOUTS.items():
            img, hdr = Path(tmp) / f"{name}.img", Path(tmp) / f"{name}.hdr"
            img.write_bytes(np.ascontiguousarray(cube.transpose(layout)).tobytes())
            hdr.write_text(f"ENVI\nsamples = 145\nlines = 145\nbands = 200\ndata type = 2\ninterleave = {name}\n"
                           "byte order = 0\nmap info = {UTM, 1, 1, 500000, 4000000, 20, 20, 16, North, WGS-84}\n")
            assert np.array_equal(read_envi(hdr).data, cube)

            def gdal_read(img=img):
                with rasterio.open(img, driver="ENVI") as ds:
                    ds.read()

            def window(hdr=hdr):
                with open_cube(hdr) as src:
                    src.read(((40, 104), (40, 104)))

            rows[name] = {"gdal_driver_ms": 1000 * best(gdal_read, args.repeats),
                          "read_envi_ms": 1000 * best(lambda hdr=hdr: read_envi(hdr), args.repeats),
                          "open_cube_64x64_window_ms": 1000 * best(window, args.repeats)}
            print(f"{name}: GDAL driver {rows[name]['gdal_driver_ms']:.1f} ms, read_envi "
                  f"{rows[name]['read_envi_ms']:.1f} ms, 64×64 window {rows[name]['open_cube_64x64_window_ms']:.1f} ms")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cube": "Indian Pines 145x145x200 int16", "repeats": args.repeats,
                                   "results": rows, "machine": machine_info()}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
