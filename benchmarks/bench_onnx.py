"""``geolesf predict --engine onnxruntime`` vs PyTorch on the same tiles: px/s and peak RSS, both measured here.

Two models, each exported with :func:`geolesf.export.onnx.export_onnx` and then run through the same tiled
predictor (:func:`geolesf.predict.tiled.predict_file`) once per engine, every run in a fresh subprocess
(its peak RSS, ``VmHWM``, is the whole process's, imports included):

* ``unet`` (the compact U-Net with the training defaults ``base=16, depth=3``, random weights, 3 bands, 4
  classes) on a ``--size``² mosaic of the real ``RGB.byte.tif`` pixels, tile 512, overlap 64, batch 4;
* ``s2mamba:indian_pines_dase`` (per-pixel 7×7 patches, 200 bands) on a ``--hsi``² crop of the embedded
  Indian Pines cube, pixel batch 1024. Its ONNX graph unrolls the selective scan (``unrolled`` backend);
  PyTorch runs geolesf's C scan kernel (``cpu`` backend), so this compares the two whole engines as shipped.

The class maps of both engines are compared (fraction of equal pixels). No floor: both sides are reported.

    python benchmarks/bench_onnx.py [--size 2048] [--hsi 32] [--threads 2]

Writes ``benchmarks/results/onnx.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "onnx.json"
UNET_ARGS = {"in_chans": 3, "num_classes": 4, "base": 16, "depth": 3}
S2MAMBA = "s2mamba:indian_pines_dase"


def _worker(engine: str, scene: str, model: str, out: str, threads: int, batch: int) -> None:
    """One prediction in this (fresh) process (model loading not timed); prints seconds, pixels, peak RSS as JSON."""
    import torch

    torch.set_num_threads(threads)
    from geolesf.predict.tiled import predict_file

    if engine == "onnxruntime":
        from geolesf.predict.onnx_engine import load_onnx_model

        checkpoint = load_onnx_model(model)
    else:
        from geolesf.predict.model import load_predict_model

        checkpoint = load_predict_model(model)
    start = time.perf_counter()
    res = predict_file(scene, checkpoint, out, progress=False, qml=False, tile=512, overlap=64, batch_size=batch)
    seconds = time.perf_counter() - start
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    print(json.dumps({"seconds": seconds, "pixels": res.width * res.height, "peak_rss_mb": rss / 1024}))


def _run(engine: str, scene: Path, model: str, out: Path, threads: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, str(scene), model, str(out), "--threads", str(threads),
           "--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["px_per_s"] = r["pixels"] / r["seconds"]
    return r


def _mosaic(size: int, out: Path) -> Path:
    import numpy as np
    import rasterio

    with rasterio.open(ROOT / "geolesf" / "embedded" / "landsat7" / "RGB.byte.tif") as src:
        data, profile = src.read(), src.profile
    reps = (1, -(-size // data.shape[1]), -(-size // data.shape[2]))
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.tile(data, reps)[:, :size, :size])
    return out


def _unet_checkpoint(out: Path) -> Path:
    import numpy as np
    import torch

    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint, save
    from geolesf.methods.unet.model import unet

    torch.manual_seed(0)
    save(out, SegmentationCheckpoint(
        model=unet(**UNET_ARGS).eval(), model_name="unet", model_args=UNET_ARGS,
        band_mean=np.array([70, 60, 55], np.float32), band_std=np.array([25, 22, 28], np.float32),
        class_ids=[1, 2, 3, 4], class_names=["a", "b", "c", "d"], colors=["#000000", "#ff0000", "#00ff00", "#0000ff"]))
    return out


def _compare(name: str, scene: Path, checkpoint: str, tmp: Path, threads: int, batch: int) -> dict:
    import numpy as np
    import rasterio

    from geolesf.export.onnx import export_onnx

    start = time.perf_counter()
    exp = export_onnx(checkpoint, tmp / f"{name}.onnx", overwrite=True)
    export_s = time.perf_counter() - start
    runs = {e: _run(e, scene, checkpoint if e == "torch" else str(exp.out), tmp / f"{name}_{e}.tif", threads, batch)
            for e in ("torch", "onnxruntime")}
    with rasterio.open(tmp / f"{name}_torch.tif") as a, rasterio.open(tmp / f"{name}_onnxruntime.tif") as b:
        same = float(np.mean(a.read(1) == b.read(1)))
    return {"export_s": export_s, "graph_nodes": exp.nodes, "onnx_mb": exp.bytes / 1e6,
            "export_max_abs_diff": exp.max_abs_diff, "equal_class_map_fraction": same, **runs,
            "onnx_vs_torch_px_per_s": runs["onnxruntime"]["px_per_s"] / runs["torch"]["px_per_s"],
            "onnx_vs_torch_peak_rss": runs["onnxruntime"]["peak_rss_mb"] / runs["torch"]["peak_rss_mb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="side of the unet mosaic scene (default 2048)")
    ap.add_argument("--hsi", type=int, default=32, help="side of the Indian Pines crop for S²Mamba (default 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=4, metavar=("ENGINE", "SCENE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker, threads=args.threads, batch=args.batch)
        return
    sys.path.insert(0, str(ROOT))
    from tests.scenes import write_scene

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        unet_scene = _mosaic(args.size, tmp / "mosaic.tif")
        hsi_scene = write_scene(tmp / "ip.tif", slice(40, 40 + args.hsi), slice(40, 40 + args.hsi))
        result = {
            "machine": machine_info(), "threads": args.threads,
            "unet": {"scene": f"{args.size}x{args.size} RGB.byte.tif mosaic", "tile": 512, "overlap": 64,
                     "batch": 4, "model_args": UNET_ARGS,
                     **_compare("unet", unet_scene, str(_unet_checkpoint(tmp / "unet.pt")), tmp, args.threads, 4)},
            "s2mamba": {"scene": f"{args.hsi}x{args.hsi} Indian Pines crop (200 bands)", "pixel_batch": 1024,
                        **_compare("s2mamba", hsi_scene, S2MAMBA, tmp, args.threads, 1024)},
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for name in ("unet", "s2mamba"):
        r = result[name]
        print(f"{name}: torch {r['torch']['px_per_s']:,.0f} px/s, {r['torch']['peak_rss_mb']:.0f} MB; onnxruntime "
              f"{r['onnxruntime']['px_per_s']:,.0f} px/s, {r['onnxruntime']['peak_rss_mb']:.0f} MB; "
              f"equal class map {100 * r['equal_class_map_fraction']:.2f} %")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
