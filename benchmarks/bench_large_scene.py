"""A scene larger than memory: windowed hsi training from polygons and streamed prediction, peak RSS.

The scene is built from real pixels: the embedded Indian Pines cube (``IP_200_M.mat``, 145×145×200,
uint8) tiled to ``--size``² (default 4,000², 224 bands, int16, ~7.2 GB) into an **uncompressed**,
64×64-tiled BigTIFF (EPSG:32616, 20 m pixels — AVIRIS' ground sampling — at a made-up origin).

- 224 bands: AVIRIS records 224 channels; the public 220-band Indian Pines lacks 4 of them and the
  200-band product removes 20 more (water vapour, 1-based 104–108, 150–163 and 220 of the 220).
  Those 20 are filled by linear interpolation between the neighbouring kept bands (the last one
  repeats band 219), and the 4 channels missing from the 220-band product repeat its last band.
  These are *not* measured spectra; they only give the file the sensor's band count.
- DN: ``uint8 × 30 + 500`` as int16 (a reflectance-like range 500..8150).
- Labels: the Indian Pines ground truth's fields as polygons (``rasterio.features.shapes``), at
  ``--copies`` positions of the tiling (one of them inside the in-memory crop), in a GeoPackage with
  an integer ``class`` column.

Measured, each in a fresh subprocess (peak RSS = ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a
wrapper process that runs only that command; wall time of the command):

(a) ``geolesf train --model rf`` from the polygons (random split, train fraction 0.2), windowed (``data.windowed: auto`` decides), with
    the whole-scene class map streamed through the tiled predictor;
(b) ``geolesf train --model s2mamba --epochs E --no-scene-map`` from the polygons of one of the
    copies (train fraction 0.5, so that steps and test pixels stay few: S²Mamba at 224 bands takes
    seconds per batch of 64 on these 2 shared cores), windowed (the
    S²Mamba map of the whole scene on 2 CPU cores would take hours: estimated from the test-pixel
    throughput of this run);
(c) ``geolesf predict`` with (b)'s ``model.pt`` on a full-width strip of the scene (rows sized to about
    ``--strip-seconds`` at the throughput of (b)), extrapolated to the whole scene;
(c') the same on one full 512-row tile row with all but 4,096 pixels set to ``--nodata``: full-size tile
    buffers and one full pixel batch, i.e. the peak of a whole-scene S²Mamba map, in minutes;
(d) the in-memory path against the windowed path, rf, on a ``--crop``² corner the in-memory path can
    hold (same polygons): peak RSS and time ratios.

    python benchmarks/bench_large_scene.py [--size 4000] [--scratch /tmp/geolesf-large] [--keep]

Writes ``benchmarks/results/large_scene.json`` and prints a Markdown table; the scratch folder (with
the 7 GB scene) is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "large_scene.json"
IP = ROOT / "geolesf" / "embedded" / "indian_pines"
WATER_220 = [*range(103, 108), *range(149, 163), 219]  # 0-based positions in the 220-band product
BLOCK, TILE = 64, 145
WRAP = ("import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "with open(sys.argv[1], 'w') as log:\n"
        "    rc = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)\n"
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t,\n"
        "                  'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")


def bands_224():
    """``(145, 145, 224)`` int16 DN from the 200-band uint8 cube (see the module docstring)."""
    import numpy as np
    import scipy.io

    cube = scipy.io.loadmat(IP / "IP_200_M.mat")["data_M"].astype(np.float64)
    full = np.zeros(cube.shape[:2] + (220,))
    keep = [i for i in range(220) if i not in WATER_220]
    full[:, :, keep] = cube
    for i in WATER_220:
        left = max(k for k in keep if k < i)
        right = [k for k in keep if k > i]
        if not right:
            full[:, :, i] = full[:, :, left]
            continue
        w = (i - left) / (right[0] - left)
        full[:, :, i] = (1 - w) * full[:, :, left] + w * full[:, :, right[0]]
    full = np.concatenate([full, np.repeat(full[:, :, -1:], 4, axis=2)], axis=2)
    return np.round(full * 30 + 500).astype(np.int16)


def write_scene(out: Path, size: int, tile) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "height": size, "width": size, "count": tile.shape[2], "dtype": "int16",
               "crs": "EPSG:32616", "transform": from_origin(500000.0, 4400000.0, 20.0, 20.0), "tiled": True,
               "blockxsize": BLOCK, "blockysize": BLOCK, "interleave": "pixel", "BIGTIFF": "YES"}
    cols = np.arange(size) % TILE
    with rasterio.open(out, "w", **profile) as dst:
        for r0 in range(0, size, BLOCK):
            rows = np.arange(r0, min(size, r0 + BLOCK)) % TILE
            strip = tile[rows][:, cols]  # (rows, size, bands)
            dst.write(np.ascontiguousarray(strip.transpose(2, 0, 1)), window=Window(0, r0, size, len(rows)))


def copy_rows(src_path: Path, out: Path, rows: int, cols: int | None = None) -> None:
    """The first ``rows`` (and ``cols``) of ``src_path`` as a GeoTIFF of the same layout."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        cols = cols or src.width
        profile = {**src.profile, "height": rows, "width": cols}
        with rasterio.open(out, "w", **profile) as dst:
            for r0 in range(0, rows, BLOCK):
                win = Window(0, r0, cols, min(BLOCK, rows - r0))
                dst.write(src.read(window=win), window=win)


def write_polygons(out: Path, scene: Path, copies: list[tuple[int, int]]) -> int:
    import geopandas as gpd
    import numpy as np
    import rasterio
    import scipy.io
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from shapely.geometry import shape

    gt = scipy.io.loadmat(IP / "Indian_pines_gt.mat")["indian_pines_gt"].astype(np.uint8)
    with rasterio.open(scene) as src:
        transform, crs = src.transform, src.crs
    geoms, classes = [], []
    for ty, tx in copies:
        t = transform * Affine.translation(tx * TILE, ty * TILE)
        for geom, value in shapes(gt, mask=gt > 0, transform=t):
            geoms.append(shape(geom))
            classes.append(int(value))
    gpd.GeoDataFrame({"class": classes}, geometry=geoms, crs=crs).to_file(out, driver="GPKG")
    return len(geoms)


def measure(cmd: list[str], log: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", WRAP, str(log), *cmd], env=env, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["command"] = " ".join(Path(c).name if "/" in c else c for c in cmd)
    if result["rc"] != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"command failed (rc {result['rc']}): {' '.join(cmd)}\n{tail}")
    return result


def geolesf(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from geolesf.cli.main import main; sys.exit(main())", *args]


def train_cmd(model: str, cube: Path, labels: Path, out: Path, *extra: str, fraction: float = 0.2) -> list[str]:
    return geolesf("train", "--model", model, "--cube", str(cube), "--labels", str(labels), "--label-field", "class",
                   "--split", "random", "--train-fraction", str(fraction), "--seed", "0", "--out", str(out), *extra)


def metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    s = m["split"]
    return {"OA": m["OA"], "kappa": m["kappa"], "timings": m["timings"], "windowed": bool(m.get("windowed")),
            "train_pixels": int(sum(s["counts"]["train"].values())), "test_pixels": int(sum(s["counts"]["test"].values()))}


def build(scratch: Path, size: int, crop: int, copies: list[tuple[int, int]]) -> dict:
    t0 = time.perf_counter()
    tile = bands_224()
    big = scratch / "scene.tif"
    write_scene(big, size, tile)
    built = {"scene": str(big), "shape": [size, size, int(tile.shape[2])], "dtype": "int16",
             "bytes": big.stat().st_size, "compression": "none", "block": BLOCK, "build_seconds": time.perf_counter() - t0}
    copy_rows(big, scratch / "crop.tif", crop, crop)
    built["polygons"] = write_polygons(scratch / "labels.gpkg", big, copies)
    built["copies"] = copies
    print(f"built {big} ({built['bytes'] / 1e9:.2f} GB) and {built['polygons']} polygons in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return built


def stage_rf(scratch: Path, args: argparse.Namespace, res: dict) -> None:
    r = measure(train_cmd("rf", scratch / "scene.tif", scratch / "labels.gpkg", scratch / "rf", *_common(args)),
                scratch / "rf.log")
    res["rf"] = {**r, **metrics(scratch / "rf"), "windowed_setting": args.windowed}
    res["rf"]["scene_map_px_per_s"] = args.size ** 2 / res["rf"]["timings"]["scene_map_seconds"]


def stage_s2mamba(scratch: Path, args: argparse.Namespace, res: dict) -> None:
    (scratch / "labels_s2.gpkg").unlink(missing_ok=True)
    polygons = write_polygons(scratch / "labels_s2.gpkg", scratch / "scene.tif", args.copies[:1])
    r = measure(train_cmd("s2mamba", scratch / "scene.tif", scratch / "labels_s2.gpkg", scratch / "s2", "--epochs",
                          str(args.epochs), "--no-scene-map", "--set", f"data.windowed={args.windowed}", fraction=0.5),
                scratch / "s2.log")
    res["s2mamba"] = {**r, **metrics(scratch / "s2"), "windowed_setting": args.windowed, "polygons": polygons}
    rate = res["s2mamba"]["test_pixels"] / res["s2mamba"]["timings"]["predict_seconds"]
    res["s2mamba"]["test_px_per_s"] = rate
    res["s2mamba"]["scene_map_estimate_hours"] = args.size ** 2 / rate / 3600


def stage_predict(scratch: Path, args: argparse.Namespace, res: dict) -> None:
    rate = res["s2mamba"]["test_px_per_s"]
    rows = int(min(args.size, max(4, args.strip_seconds * rate // args.size)))
    for suffix in (".tif", ".qml", ".png"):
        (scratch / "strip_map").with_suffix(suffix).unlink(missing_ok=True)
    copy_rows(scratch / "scene.tif", scratch / "strip.tif", rows)
    r = measure(geolesf("predict", str(scratch / "strip.tif"), "--checkpoint", str(scratch / "s2" / "model.pt"),
                        "--out", str(scratch / "strip_map.tif")), scratch / "predict.log")
    rate = rows * args.size / r["seconds"]
    res["predict_strip"] = {**r, "rows": rows, "width": args.size, "px_per_s": rate,
                            "whole_scene_estimate_hours": args.size ** 2 / rate / 3600}


def stage_tile_row(scratch: Path, args: argparse.Namespace, res: dict) -> None:
    """A full 512-row tile row of the scene through ``geolesf predict --nodata``: every tile is read,
    normalised and padded at full size, but only the first 4,096 pixels (one full pixel batch) are
    valid, so the peak RSS of a whole-scene S²Mamba map is measured in minutes instead of hours."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    rows, nodata = 512, -32768
    path = scratch / "tile_row.tif"
    copy_rows(scratch / "scene.tif", path, rows)
    with rasterio.open(path, "r+") as dst:
        for r0 in range(0, rows, BLOCK):
            win = Window(0, r0, args.size, BLOCK)
            data = dst.read(window=win)
            keep = np.zeros(data.shape[1:], bool)
            keep[: max(0, 8 - r0), :512] = True
            dst.write(np.where(keep, data, np.int16(nodata)), window=win)
    for suffix in (".tif", ".qml", ".png"):
        (scratch / "tile_row_map").with_suffix(suffix).unlink(missing_ok=True)
    r = measure(geolesf("predict", str(path), "--checkpoint", str(scratch / "s2" / "model.pt"), "--nodata", str(nodata),
                        "--out", str(scratch / "tile_row_map.tif")), scratch / "tile_row.log")
    res["predict_tile_row"] = {**r, "rows": rows, "width": args.size, "valid_pixels": 8 * 512}


def stage_crop(scratch: Path, args: argparse.Namespace, res: dict) -> None:
    for mode in ("false", "true"):
        r = measure(train_cmd("rf", scratch / "crop.tif", scratch / "labels.gpkg", scratch / f"crop_{mode}",
                              *_common(args, mode)), scratch / f"crop_{mode}.log")
        res[f"crop_windowed_{mode}"] = {**r, **metrics(scratch / f"crop_{mode}")}
    mem, win = res["crop_windowed_false"], res["crop_windowed_true"]
    res["crop_ratio"] = {"peak_rss_windowed_over_in_memory": win["peak_rss_mb"] / mem["peak_rss_mb"],
                         "seconds_windowed_over_in_memory": win["seconds"] / mem["seconds"],
                         "same_OA": mem["OA"] == win["OA"]}


def _common(args: argparse.Namespace, windowed: str | None = None) -> list[str]:
    return ["--set", f"data.windowed={windowed or args.windowed}", "--set", f"model.args.n_estimators={args.trees}"]


RUN_FOLDERS = {"rf": ["rf"], "s2mamba": ["s2"], "predict": [], "tile_row": [], "crop": ["crop_false", "crop_true"]}
STAGES = {"rf": stage_rf, "s2mamba": stage_s2mamba, "predict": stage_predict, "tile_row": stage_tile_row,
          "crop": stage_crop}


def run_stages(scratch: Path, args: argparse.Namespace, result: dict) -> None:
    """Each stage into ``result['runs']``, saved after every stage (a later stage can be rerun alone)."""
    runs = result.setdefault("runs", {})
    for name in args.stages.split(","):
        for sub in RUN_FOLDERS[name]:
            shutil.rmtree(scratch / sub, ignore_errors=True)
        STAGES[name](scratch, args, runs)
        print(name, json.dumps({k: v for k, v in runs.items()}, default=str)[-1500:], flush=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


def table(r: dict) -> str:
    """Markdown: one row per run that is in ``r['runs']``."""
    s, runs = r["scene"], r.get("runs", {})
    head = (f"Scene {s['shape'][0]:,}×{s['shape'][1]:,}×{s['shape'][2]} int16, {s['bytes'] / 1e9:.2f} GB uncompressed "
            f"(tiled {s['block']}×{s['block']}), {s['polygons']} training polygons. Target peak RSS < "
            f"{r['target_peak_rss_mb']:,} MB.")
    rows = ["| run | pixels | seconds | pixels/s | peak RSS MB | notes |", "|---|---|---|---|---|---|"]
    if "rf" in runs:
        rf = runs["rf"]
        rows.append(f"| (a) train rf, windowed, + streamed scene map | {s['shape'][0] * s['shape'][1]:,} | "
                    f"{rf['seconds']:.0f} | {rf['scene_map_px_per_s']:,.0f} (map) | {rf['peak_rss_mb']:,.0f} | "
                    f"{r['trees']} trees, {rf['train_pixels']:,} train / {rf['test_pixels']:,} test px, OA {rf['OA']:.4f}; "
                    f"map {rf['timings']['scene_map_seconds']:.0f} s |")
    if "s2mamba" in runs:
        s2 = runs["s2mamba"]
        rows.append(f"| (b) train s2mamba, windowed, no scene map | {s2['test_pixels']:,} test | {s2['seconds']:.0f} | "
                    f"{s2['test_px_per_s']:,.0f} (test px) | {s2['peak_rss_mb']:,.0f} | {r['epochs']} epoch(s), "
                    f"{s2['train_pixels']:,} train px (patches held: {s2['train_pixels'] * s['shape'][2] * 49 * 4 / 2**20:,.0f} MB); "
                    f"whole-scene map ≈ {s2['scene_map_estimate_hours']:.1f} h at this rate |")
    if "predict_strip" in runs:
        p = runs["predict_strip"]
        rows.append(f"| (c) `geolesf predict` s2mamba, {p['width']:,}×{p['rows']} strip | {p['rows'] * p['width']:,} | "
                    f"{p['seconds']:.0f} | {p['px_per_s']:,.0f} | {p['peak_rss_mb']:,.0f} | "
                    f"whole scene ≈ {p['whole_scene_estimate_hours']:.1f} h |")
    if "predict_tile_row" in runs:
        t = runs["predict_tile_row"]
        rows.append(f"| (c') `geolesf predict` s2mamba, one full tile row {t['width']:,}×{t['rows']} (`--nodata`) | "
                    f"{t['valid_pixels']:,} valid | {t['seconds']:.0f} | – | {t['peak_rss_mb']:,.0f} | every tile read, "
                    f"normalised, padded at full size; one full pixel batch: the per-row peak of a whole-scene map |")
    if "predict_tile_row_pixel_batch_4096" in runs:
        t = runs["predict_tile_row_pixel_batch_4096"]
        rows.append(f"| (c') the same with the former default pixel batch 4,096 | {t['valid_pixels']:,} valid | "
                    f"{t['seconds']:.0f} | – | {t['peak_rss_mb']:,.0f} | why the default became 1,024 |")
    if "crop_ratio" in runs:
        c, mem, win = runs["crop_ratio"], runs["crop_windowed_false"], runs["crop_windowed_true"]
        rows.append(f"| (d) rf, {r['crop']:,}² crop, in memory | {r['crop'] ** 2:,} | {mem['seconds']:.0f} | – | "
                    f"{mem['peak_rss_mb']:,.0f} | OA {mem['OA']:.4f} |")
        rows.append(f"| (d) rf, {r['crop']:,}² crop, windowed | {r['crop'] ** 2:,} | {win['seconds']:.0f} | – | "
                    f"{win['peak_rss_mb']:,.0f} | OA {win['OA']:.4f}; windowed / in memory: RSS "
                    f"{c['peak_rss_windowed_over_in_memory']:.2f}, time {c['seconds_windowed_over_in_memory']:.2f} |")
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--crop", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--trees", type=int, default=30, help="rf trees (fewer than rf's 200: the map is what is timed)")
    ap.add_argument("--strip-seconds", type=float, default=240.0)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/geolesf-large"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--stages", default="rf,s2mamba,predict,tile_row,crop", help="stages to (re)run; with --keep, "
                    "a kept scene is reused and the other stages' results are kept")
    ap.add_argument("--windowed", default="auto", help="data.windowed of runs (a) and (b) (auto: windowed at 4,000²)")
    ap.add_argument("--results", type=Path, default=None, help="JSON to write (default: results/large_scene.json)")
    args = ap.parse_args()
    RESULTS = args.results or RESULTS
    last = args.size // TILE - 2
    copies = args.copies = [(1, 1), (1, last), (last, 1), (last, last)]
    args.scratch.mkdir(parents=True, exist_ok=True)
    kept = args.scratch / "scene.json"
    result = json.loads(RESULTS.read_text()) if kept.is_file() and RESULTS.is_file() else {}
    try:
        if not kept.is_file():
            scene = build(args.scratch, args.size, args.crop, copies)
            kept.write_text(json.dumps(scene))
        result.update(scene=json.loads(kept.read_text()), crop=args.crop, epochs=args.epochs, trees=args.trees,
                      target_peak_rss_mb=3072, machine=machine_info())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        run_stages(args.scratch, args, result)
    finally:
        if not args.keep:
            shutil.rmtree(args.scratch, ignore_errors=True)
    print(table(result))


if __name__ == "__main__":
    main()
