"""geolesf's tiled predictor against geoai-py's on the same model, scene and tiling.

Model: ``segmentation_models_pytorch.Unet`` with a ResNet-18 encoder, random weights (seeded,
identical for both), 3 bands in, 4 classes. Scene: a mosaic of the real ``RGB.byte.tif`` pixels
(Landsat 7, EPSG:32618, nodata collar included). Tile 512, overlap 64, cosine blending, batch 8,
2 threads. Each predictor runs in a fresh subprocess (peak RSS = VmHWM of the prediction alone,
reset just before it). The machine is shared, so each child also times the bare ``NCHW`` forward of
the same model on two batches just before and just after its prediction (the same work in both
children): the load-normalised speed ratio compares the two predictions in units of that
reference, and the CPU seconds of each prediction are recorded too. In the geolesf child, after
the prediction: the bare forward in the predictor's input layout (channels-last, the default
``memory_format="auto"``) on two batches, and this machine's FLOP/s limits
(:func:`bench_predict.machine_limits`). The output gives, per scene, geolesf's px/s and peak RSS
as ratios of geoai-py's (targets at 8,192²: ≥ 1.3× and ≤ 0.25×).

geolesf runs twice: with the fixed 512/64 tiles (batch 8) and with ``tile="auto"``
(:mod:`geolesf.predict.autotile`: tile and batch from the default memory budget, least overlap
waste), in the same run. For each: the waste (computed px / scene px), and how far the scene rate
is from the bare forward's (scene px/s over the bare channels-last forward's px/s on 512² tiles).
``--predictors`` picks which of ``geolesf,geolesf-auto,geoai`` run.

geoai-py is not a geolesf dependency. Install it only for this benchmark, outside the venv, e.g.::

    pip install --no-deps --target /tmp/geoai/target geoai-py==0.40.1
    pip install --target /tmp/geoai/deps leafmap          # geoai.utils imports it eagerly
    python benchmarks/bench_predict_peer.py --geoai-path /tmp/geoai/target:/tmp/geoai/deps

Writes ``benchmarks/results/predict_peer.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402
from bench_predict import _vm, bare_forward, build_mosaic, machine_limits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "predict_peer.json"
TILE, OVERLAP, BATCH, CLASSES = 512, 64, 8, 4


def _model():
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=CLASSES).eval()


def _clear_peak() -> bool:
    """Reset this process's VmHWM (Linux ≥ 4.0), so a reference forward run before the prediction does
    not count in the predictor's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(which: str, scene: str, out: str, threads: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    model = _model()
    result: dict = {"which": which}
    x = torch.from_numpy(np.random.default_rng(0).random((BATCH, 3, TILE, TILE), dtype=np.float32))

    def reference() -> float:  # NCHW bare forward, seconds per tile over two batches: the load yardstick
        return bare_forward(model, x, 2 * BATCH, channels_last=False) / (2 * BATCH)

    result["load_1min_at_start"] = os.getloadavg()[0]
    ref_before = reference()
    if not _clear_peak():
        raise SystemExit("cannot reset VmHWM (/proc/self/clear_refs)")
    cpu0 = os.times()
    if which == "geoai":
        import geoai
        from geoai.inference import predict_geotiff

        result["version"] = getattr(geoai, "__version__", "?")
        t = time.perf_counter()
        # Class map out, as geolesf writes: argmax of the blended outputs, uint8.
        predict_geotiff(model, scene, out, tile_size=TILE, overlap=OVERLAP, batch_size=BATCH,
                        num_classes=CLASSES, blend_mode="cosine", device="cpu", verbose=False,
                        preprocess_fn=lambda x: x.astype(np.float32) / 255.0,
                        postprocess_fn=lambda a: a.argmax(0).astype(np.uint8), output_dtype="uint8",
                        output_nodata=255)
        result["seconds"] = time.perf_counter() - t
        result["output"] = "uint8 GeoTIFF (LZW), no colour table, nodata collar predicted"
    else:
        from geolesf.predict.autotile import waste
        from geolesf.predict.model import as_predict_model
        from geolesf.predict.tiled import predict_raster

        def normalise(x: np.ndarray) -> np.ndarray:
            return x.astype(np.float32) / 255.0

        pm = as_predict_model(model, class_names=[f"c{i}" for i in range(CLASSES)])
        pm.normalise = normalise
        tiling = {"tile": "auto"} if which == "geolesf-auto" else {"tile": TILE, "batch_size": BATCH}
        t = time.perf_counter()
        res = predict_raster(scene, pm, out, overlap=OVERLAP, blend="cosine", progress=False, **tiling)
        result["seconds"] = time.perf_counter() - t
        c = res.tile_choice
        result["tile"], result["batch"] = (c.tile, c.batch) if c else (TILE, BATCH)
        result["waste"] = waste(res.height, res.width, result["tile"], OVERLAP, 32)
        if c:
            result["memory_estimate"], result["memory_budget"] = c.memory, c.budget
        result["forward_seconds"] = res.forward_seconds
        result["output"] = "uint8 COG (deflate, overviews), colour table, class names, .qml, nodata kept"
        result["tiles_run"], result["tiles"] = res.tiles_run, res.tiles
    cpu1 = os.times()
    result["cpu_seconds"] = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    result["peak_rss"] = _vm("VmHWM")
    result["load_1min_at_end"] = os.getloadavg()[0]
    result["ref_nchw_seconds_per_tile"] = (ref_before + reference()) / 2
    if which.startswith("geolesf"):
        result["bare_cl_seconds_per_tile"] = bare_forward(model, x, 2 * BATCH, channels_last=True) / (2 * BATCH)
        result["limits"] = machine_limits(model, 3, TILE)
    print(json.dumps(result))


def run_child(which: str, scene: Path, out: Path, threads: int, geoai_path: str | None) -> dict:
    env = dict(os.environ)
    if which == "geoai":
        if not geoai_path:
            raise SystemExit("--geoai-path is required (see the module docstring)")
        env["PYTHONPATH"] = os.pathsep.join([env.get("PYTHONPATH", ""), geoai_path]).strip(os.pathsep)
    cmd = [sys.executable, __file__, "--child", which, str(scene), str(out), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
        raise SystemExit(f"{which} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _vs_bare(g: dict, size: int) -> dict:
    """How far a geolesf run is from its bare forward: on the tiles it computed, and on the scene's pixels."""
    bare_px_s = TILE * TILE / g["bare_cl_seconds_per_tile"]
    computed = g["waste"] * size * size
    return {"predict_vs_bare_forward_same_pixels": computed / bare_px_s / g["seconds"],
            "scene_rate_vs_bare_forward": size * size / g["seconds"] / bare_px_s, "waste": g["waste"]}


def _ratios(runs: dict, size: int) -> dict:
    """geolesf (512/64 and auto) against geoai-py and each other, and against the bare forward."""
    q: dict = {}
    g, a, p = runs.get(f"geolesf_{size}"), runs.get(f"geolesf-auto_{size}"), runs.get(f"geoai_{size}")
    for name, r in (("", g), ("auto_", a)):
        if r is None:
            continue
        q.update({f"{name}{k}": v for k, v in _vs_bare(r, size).items()})
        if p is not None:
            q[f"{name}px_per_s_vs_geoai"] = r["mpx_per_s"] / p["mpx_per_s"]
            q[f"{name}peak_rss_vs_geoai"] = r["peak_rss"] / p["peak_rss"]
            # each predictor's time in units of the NCHW bare forward of one tile, timed in its own process
            # just before and after it: the machine is shared, and the load differs between the runs
            q[f"{name}px_per_s_vs_geoai_load_normalised"] = ((p["seconds"] / p["ref_nchw_seconds_per_tile"])
                                                            / (r["seconds"] / r["ref_nchw_seconds_per_tile"]))
            q[f"{name}px_per_cpu_s_vs_geoai"] = p["cpu_seconds"] / r["cpu_seconds"]
    if g is not None and a is not None:
        q["auto_vs_512_px_per_s"] = a["mpx_per_s"] / g["mpx_per_s"]
        q["auto_vs_512_px_per_s_load_normalised"] = ((g["seconds"] / g["ref_nchw_seconds_per_tile"])
                                                     / (a["seconds"] / a["ref_nchw_seconds_per_tile"]))
        q["auto_vs_512_peak_rss"] = a["peak_rss"] / g["peak_rss"]
    if g is not None:
        lim = g["limits"]
        bare_mpx_s = TILE * TILE / 1e6 / g["bare_cl_seconds_per_tile"]
        gflops = lim["flops_per_px"] * bare_mpx_s * 1e6 / 1e9
        q.update({"predict_vs_bare_forward_same_tiles": g["tiles_run"] * g["bare_cl_seconds_per_tile"] / g["seconds"],
                  "bare_channels_last_vs_nchw": g["ref_nchw_seconds_per_tile"] / g["bare_cl_seconds_per_tile"],
                  "bare_forward_gflops": gflops, "bare_forward_share_of_matmul_peak": gflops / lim["matmul_gflops"]})
    return q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4096,8192", help="scene sides, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--predictors", default="geolesf,geolesf-auto,geoai",
                        help="which predictors run, comma-separated (geolesf = 512/64 tiles, geolesf-auto = tile auto)")
    parser.add_argument("--geoai-path", help="PYTHONPATH entries holding geoai-py and its imports")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, threads=args.threads)
        return
    runs: dict[str, dict] = {}
    ratios: dict[str, dict] = {}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="geolesf_peer_") as tmp:
        tmp = Path(tmp)
        for size in [int(s) for s in args.sizes.split(",")]:
            scene = tmp / f"scene_{size}.tif"
            build_mosaic(size, scene)
            for which in args.predictors.split(","):
                r = run_child(which, scene, tmp / f"{which}_{size}.tif", args.threads, args.geoai_path)
                r["mpx_per_s"] = size * size / 1e6 / r["seconds"]
                runs[f"{which}_{size}"] = r
                print(f"{which} {size}²: {json.dumps(r)}", file=sys.stderr)
            ratios[str(size)] = _ratios(runs, size)
            print(f"{size}²: {json.dumps(ratios[str(size)])}", file=sys.stderr)
            scene.unlink()
    versions = [r.get("version") for r in runs.values() if r.get("version")]
    machine = machine_info()
    machine["load_average_1min_at_start"], machine["load_average_1min_at_end"] = load_start, os.getloadavg()[0]
    report = {"benchmark": "predict_peer", "machine": machine, "threads": args.threads,
              "geoai_version": versions[0] if versions else None,
              "model": "smp.Unet(resnet18, random init, 3→4)", "tile": TILE, "overlap": OVERLAP, "batch": BATCH,
              "blend": "cosine", "memory_format": "auto", "runs": runs, "ratios": ratios,
              "targets": {"px_per_s_vs_geoai": ">= 1.3 at 8192", "peak_rss_vs_geoai": "<= 0.25 at 8192",
                          "auto_px_per_s_vs_geoai": ">= 1.3 at 8192", "auto_peak_rss_vs_geoai": "<= 0.25 at 8192"}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print("| predictor | scene | seconds | Mpx/s | peak RSS MB | tile/batch | waste |")
    print("|---|---|---|---|---|---|---|")
    for key, r in runs.items():
        which, size = key.split("_")
        print(f"| {which} | {size}² | {r['seconds']:.1f} | {r['mpx_per_s']:.3f} | {r['peak_rss'] / 2**20:,.0f} | "
              f"{r.get('tile', TILE)}/{r.get('batch', BATCH)} | {r.get('waste', float('nan')):.3f} |")
    for size, q in ratios.items():
        print(f"- {size}²: {json.dumps(q)}")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
