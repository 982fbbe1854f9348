"""Tiled prediction: overhead vs bare forward, and peak memory vs scene size.

Scenes are mosaics of the real ``RGB.byte.tif`` pixels (Landsat 7, EPSG:32618, nodata collar
included) written to temporary tiled GeoTIFFs. The model is the registered compact ``unet``
(random weights, ``base=4``, 4 classes), tile 512, overlap 64, cosine blending, batch 8.

(a) overhead: tiles/s of ``predict_raster`` (reading, nodata masks, blending, streaming COG
    writing included) over tiles/s of the bare ``model(x)`` forward on the same number of tiles of
    the same shape and batch, same process, same threads (target ≥ 0.8). The peer-style ratio —
    scene Mpx/s over bare-forward Mpx/s — is also reported; overlap alone caps it at
    ((512-64)/512)² ≈ 0.77.
(b) memory: peak RSS (VmHWM) of a fresh subprocess predicting a 16,384² scene vs a 4,096² scene,
    3 fresh processes each (target: every 16,384² run ≤ 1.15 × the 4,096² peak — the worst pair,
    largest big-scene peak over smallest small-scene peak, is reported, not only the medians).
(c) this machine's limit: FLOPs per pixel of the model (``torch.utils.flop_counter``), the GFLOP/s
    its bare forward reaches, and the GFLOP/s of a large float32 matmul and of a 3×3 convolution on
    the same threads (:func:`machine_limits`).

The predictor's input layout (``memory_format``) is ``auto`` (channels-last on CPU); the bare
forward is timed in both layouts.

    python benchmarks/bench_predict.py [--big 16384] [--small 4096] [--threads 2] [--tile auto]

Writes ``benchmarks/results/predict.json`` and prints a Markdown table. ``--tile auto`` runs the
predictor with ``tile="auto"`` (:mod:`geolesf.predict.autotile`, default memory budget; the tile and
batch differ per scene) and writes ``benchmarks/results/predict_auto.json``; the bare forward is then
timed on 512² tiles, batch 8, as many as cover the pixels the predictor computed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "predict.json"
MODEL_ARGS = {"in_chans": 3, "num_classes": 4, "base": 4, "depth": 3}
TILE, OVERLAP, BATCH = 512, 64, 8


def _source() -> Path:
    data = os.environ.get("GEOLESF_DATA")
    candidates = [Path(data) / "rasterio_landsat7" / "RGB.byte.tif"] if data else []
    candidates.append(ROOT / "geolesf" / "embedded" / "landsat7" / "RGB.byte.tif")
    for c in candidates:
        if c.is_file():
            return c
    raise SystemExit("RGB.byte.tif not found (set GEOLESF_DATA)")


def build_mosaic(size: int, out: Path) -> None:
    """A ``size × size`` tiled GeoTIFF repeating the real scene's pixels (georeferenced like it)."""
    import numpy as np
    import rasterio

    with rasterio.open(_source()) as src:
        data = src.read()
        profile = src.profile
    _, h, w = data.shape
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512, compress=None)
    with rasterio.open(out, "w", **profile) as dst:
        reps = -(-size // w)
        strip = np.tile(data, (1, 1, reps))[:, :, :size]
        for r0 in range(0, size, 512):
            rows = np.arange(r0, min(size, r0 + 512)) % h
            dst.write(strip[:, rows], window=rasterio.windows.Window(0, r0, size, len(rows)))


def _vm(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def _best(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine_limits(model, bands: int, tile: int) -> dict:
    """FLOPs per pixel of ``model`` on a ``tile²`` input and the GFLOP/s of this machine's float32
    matmul (2048², best of 5) and 3×3 convolution (64→64 channels, 8×128², channels-last, best of 3),
    on the threads torch is set to."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, bands, tile, tile))
        flops_px = counter.get_total_flops() / (tile * tile)
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        torch.mm(a, b)
        mm_s = _best(lambda: torch.mm(a, b), 5)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
        x = torch.randn(8, 64, 128, 128).contiguous(memory_format=torch.channels_last)
        conv(x)
        conv_s = _best(lambda: conv(x))
    conv_flops = 2 * 64 * 64 * 9 * 8 * 128 * 128
    return {"flops_per_px": flops_px, "matmul_gflops": 2 * 2048**3 / mm_s / 1e9, "conv_gflops": conv_flops / conv_s / 1e9}


def bare_forward(model, x, tiles: int, channels_last: bool) -> float:
    """Seconds of the bare forward (+ softmax, to numpy) over ``tiles`` tiles in batches of ``len(x)``."""
    import torch

    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        while n < tiles:
            b = min(len(x), tiles - n)
            model(x[:b]).softmax(1).numpy()
            n += b
    return time.perf_counter() - start


def child(scene: str, out: str, threads: int, bare: bool, tile: str = str(TILE)) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from geolesf.methods.unet.model import unet
    from geolesf.predict.tiled import predict_raster

    model = unet(**MODEL_ARGS).eval()
    names = ["a", "b", "c", "d"]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(BATCH, 3, TILE, TILE)).astype(np.float32))
    rss_ready = _vm("VmRSS")
    tiling = {"tile": "auto"} if tile == "auto" else {"tile": int(tile), "batch_size": BATCH}
    res = predict_raster(scene, model, out, overlap=OVERLAP, blend="cosine", class_names=names, progress=False,
                         **tiling)
    from geolesf.predict.autotile import waste

    c = res.tile_choice
    side, batch = (c.tile, c.batch) if c else (int(tile), BATCH)
    computed = waste(res.height, res.width, side, OVERLAP, 8) * res.height * res.width * res.tiles_run / res.tiles
    result = {
        "scene_px": res.height * res.width, "seconds": res.seconds, "forward_seconds": res.forward_seconds,
        "tiles": res.tiles, "tiles_run": res.tiles_run, "mpx_per_s": res.megapixels_per_second,
        "peak_rss": _vm("VmHWM"), "rss_after_model": rss_ready, "tile": side, "batch": batch,
        "computed_px": computed, "waste": computed / (res.height * res.width),
    }
    if bare:
        # Bare forward on the same number of tiles, same batch, in the predictor's layout (channels-last)
        # and in NCHW; best of two each (the machine is shared).
        n = -(-int(computed) // (TILE * TILE))  # 512² tiles covering the computed pixels (= tiles run at 512)
        for key, cl in (("", True), ("_nchw", False)):
            bare_s = min(bare_forward(model, x, n, cl), bare_forward(model, x, n, cl))
            result[f"bare{key}_seconds"] = bare_s
            result[f"bare{key}_tiles_per_s"] = n / bare_s
            result[f"bare{key}_mpx_per_s"] = n * TILE * TILE / 1e6 / bare_s
        result["limits"] = machine_limits(model, 3, TILE)
    print(json.dumps(result))


def run_child(scene: Path, out: Path, threads: int, bare: bool, tile: str = str(TILE)) -> dict:
    cmd = [sys.executable, __file__, "--child", str(scene), str(out), "--threads", str(threads), "--tile", tile]
    if bare:
        cmd.append("--bare")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=16384)
    parser.add_argument("--small", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per scene size; the memory ratio is reported for the medians and "
                        "for the worst pair (largest big-scene peak / smallest small-scene peak)")
    parser.add_argument("--tile", default=str(TILE), help="tile side, or auto (writes results/predict_auto.json)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, threads=args.threads, bare=args.bare, tile=args.tile)
        return
    results = RESULTS.with_name("predict_auto.json") if args.tile == "auto" else RESULTS
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="geolesf_bench_") as tmp:
        tmp = Path(tmp)
        runs = {}
        for size, bare in ((args.small, True), (args.big, False)):
            scene = tmp / f"scene_{size}.tif"
            t = time.perf_counter()
            build_mosaic(size, scene)
            print(f"built {size}² mosaic in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            runs[size] = run_child(scene, tmp / f"out_{size}.tif", args.threads, bare, args.tile)
            print(f"{size}²: {json.dumps(runs[size])}", file=sys.stderr)
            peaks = [runs[size]["peak_rss"]]
            for _ in range(args.repeats - 1):
                peaks.append(run_child(scene, tmp / f"out_{size}.tif", args.threads, False, args.tile)["peak_rss"])
            runs[size]["peak_rss_runs"] = peaks
            runs[size]["peak_rss_median"] = statistics.median(peaks)
            print(f"{size}² peaks (MB): {[round(x / 2**20) for x in peaks]}", file=sys.stderr)
            scene.unlink()
    small, big = runs[args.small], runs[args.big]
    # predict over bare forward on the same computed pixels (for tile 512: the same tiles)
    tiles_ratio = (small["computed_px"] / small["seconds"]) / (small["bare_mpx_per_s"] * 1e6)
    scene_ratio = small["mpx_per_s"] / small["bare_mpx_per_s"]
    mem_ratio = big["peak_rss_median"] / small["peak_rss_median"]
    mem_worst = max(big["peak_rss_runs"]) / min(small["peak_rss_runs"])
    forward_share = small["forward_seconds"] / small["seconds"]
    lim = small["limits"]
    achieved = lim["flops_per_px"] * small["bare_mpx_per_s"] * 1e6 / 1e9
    machine = machine_info()
    machine["load_average_1min_at_start"], machine["load_average_1min_at_end"] = load_start, os.getloadavg()[0]
    report = {
        "benchmark": "predict", "machine": machine, "threads": args.threads, "memory_format": "auto",
        "model": {"name": "unet", **MODEL_ARGS}, "tile": args.tile if args.tile == "auto" else int(args.tile),
        "overlap": OVERLAP, "batch": "auto" if args.tile == "auto" else BATCH,
        "runs": {str(k): v for k, v in runs.items()},
        "overhead_ratio_same_tiles": tiles_ratio, "scene_ratio_vs_bare": scene_ratio,
        "overlap_cap": 1 / small["waste"], "forward_share_of_predict_time": forward_share,
        "memory_ratio": mem_ratio, "memory_ratio_worst_pair": mem_worst,
        "memory_ratio_each_big_run": [p / small["peak_rss_median"] for p in big["peak_rss_runs"]],
        "channels_last_vs_nchw_bare": small["bare_mpx_per_s"] / small["bare_nchw_mpx_per_s"],
        "bare_forward_gflops": achieved, "bare_forward_share_of_matmul_peak": achieved / lim["matmul_gflops"],
        "targets": {"overhead_ratio_same_tiles": ">= 0.8", "memory_ratio_worst_pair": "<= 1.15"},
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    mb = 1 / 2**20
    print("| scene | tile/batch | tiles run | computed/scene px | seconds | Mpx/s | bare forward Mpx/s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for size, r in runs.items():
        bare = f"{r['bare_mpx_per_s']:.2f}" if "bare_mpx_per_s" in r else "—"
        print(f"| {size}² | {r['tile']}/{r['batch']} | {r['tiles_run']} | {r['waste']:.3f} | {r['seconds']:.1f} | "
              f"{r['mpx_per_s']:.2f} | {bare} | {r['peak_rss'] * mb:.0f} |")
    print()
    print(f"- overhead (same tiles, predict / bare forward): **{tiles_ratio:.2f}** (target ≥ 0.8)")
    print(f"- share of predict wall time spent in the model's forward: {forward_share:.2f}")
    print(f"- scene Mpx/s / bare-forward Mpx/s: {scene_ratio:.2f} (overlap cap {report['overlap_cap']:.2f}; "
          "geoai-py 0.60–0.67 per peers.md)")
    print(f"- peak RSS {args.big}² / {args.small}² over {args.repeats} runs each: medians **{mem_ratio:.3f}**, "
          f"worst pair **{mem_worst:.3f}** (target ≤ 1.15)")
    print(f"- limit: {lim['flops_per_px']:.0f} FLOP/px; bare forward {achieved:.1f} GFLOP/s = "
          f"{achieved / lim['matmul_gflops']:.2f} of a 2048² matmul ({lim['matmul_gflops']:.0f} GFLOP/s), "
          f"3×3 conv 64→64 {lim['conv_gflops']:.0f} GFLOP/s")
    print(f"\nwrote {results}")


if __name__ == "__main__":
    main()
