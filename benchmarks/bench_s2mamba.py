"""S²Mamba throughput on the real Indian Pines scene (embedded 8-bit copy, 145×145×200).

1. Whole-scene map: pixels/s of patch inference (batch 1024, P = 7) with each available
   selective-scan backend, over the whole scene and for the fastest batch (best of the scene's
   20 batches, timed again: the figure a shared machine disturbs least). The ``reference`` backend is timed on a slice of the scene (it is the
   readable definition, not a production path); the others on all 21,025 pixels. On the CPU the
   ``cpu`` backend runs the copy-free fused forward (``geolesf/methods/hsi/s2mamba_fused.py``).
2. Same class map: the embedded checkpoint ``s2mamba:indian_pines_dase`` classifies the whole
   scene with the fused forward and with the composed forward it replaces; the JSON records how
   many classes differ (must be 0) and the largest probability difference (must be ≤ 1e-5).
3. Training time per epoch for the official Indian Pines configuration
   (``geolesf/configs/s2mamba/indian_pines.yaml``: fixed SpectralFormer split, 695 training pixels, batch 64),
   measured on the real Lightning loop: end to end (setup, epochs, checkpoints, plots) over
   1 + ``--epochs`` epochs divided by them, as earlier revisions reported it, and per further epoch
   (that run minus a 1-epoch run, divided by ``--epochs``: the fixed cost removed), in wall and
   CPU time; and the fastest of 40 training steps (batch 64 of the training pixels, forward, loss,
   backward, AdamW) times the steps of an epoch. Needs ``GEOLESF_DATA`` for the
   fixed maps; without it the 10 % random split (1,025 pixels) is used and the JSON says so.
4. How far from this machine's limit: the model's FLOPs per pixel (matmuls and convolutions
   counted by ``torch.utils.flop_counter``, plus the selective scans at about 15 flops per
   state and step: exp2 polynomial, state update, output) against a float32 matmul's GFLOP/s
   measured on the same threads in the same run: the px/s the forward would reach at matmul
   rate, and the fraction of it measured; for training, the epoch time at matmul rate with the
   backward counted as twice the forward.
5. ``--baseline REV`` (repeatable): this script run again on the code of git revision REV
   (extracted with ``git archive`` into a temp folder put first on ``PYTHONPATH`` of a subprocess)
   right after this one, so the speed-ups are ratios of identical measurements in one run on one
   machine. That machine may be loaded (the JSON records the load average before and after): the
   ratios are given for wall time, CPU time (``process_time``, all threads) and best-of-N (the
   fastest batch / training step), the last the least distorted by other processes.

    python benchmarks/bench_s2mamba.py [--epochs 3] [--reference-pixels 2048] [--baseline REV ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "s2mamba.json"


def scene_throughput(backends: list[str], reference_pixels: int) -> dict[str, dict[str, float]]:
    from geolesf.io.hsi import read_cube
    from geolesf.methods.hsi.s2mamba import S2Mamba
    from geolesf.predict.patches import PatchGatherer, predict_pixels

    cube = read_cube(ROOT / "geolesf/embedded/indian_pines/IP_200_M.mat").data.astype(np.float32)
    cube = (cube - cube.mean((0, 1))) / cube.std((0, 1))
    h, w, bands = cube.shape
    gather = PatchGatherer(cube, 7, "symmetric")
    rows, cols = np.divmod(np.arange(h * w), w)
    out: dict[str, dict[str, float]] = {}
    torch.manual_seed(0)
    model = S2Mamba(bands, 16, 7).eval()
    for backend in backends:
        for m in model.modules():
            if hasattr(m, "scan_backend"):
                m.scan_backend = backend
        n = min(reference_pixels, h * w) if backend == "reference" else h * w
        with torch.inference_mode():
            predict_pixels(model, gather, rows[:1024], cols[:1024], 1024, progress=False)  # warm-up
            start, cpu = time.perf_counter(), time.process_time()
            predict_pixels(model, gather, rows[:n], cols[:n], 1024, progress=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        # cpu_seconds: CPU time of all this process's threads; n / cpu_seconds is a throughput that
        # a loaded machine distorts far less than wall time (2 idle cores: ≈ 2 × that figure)
        out[backend] = {"pixels": int(n), "seconds": seconds, "pixels_per_second": n / seconds,
                        "cpu_seconds": cpu, "pixels_per_cpu_second": n / cpu}
        if backend != "reference":
            out[backend]["best_batch_pixels_per_second"] = best_batch_rate(model, gather, rows, cols)
        print(f"scene map, backend {backend:>9}: {n / seconds:10,.0f} px/s ({n} px in {seconds:.2f} s; "
              f"{n / cpu:,.0f} px per CPU-second)")
    return out


def best_batch_rate(model, gather, rows, cols, batch: int = 1024, repeats: int = 1) -> float:
    """px/s of the fastest 1,024-pixel batch (patch gather + forward + argmax) over the scene,
    ``repeats`` times: on a shared machine the least disturbed batch is the closest to the
    machine's own speed, for every revision alike."""
    rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            for i in range(0, len(rows_t) - batch + 1, batch):
                start = time.perf_counter()
                model(gather(rows_t[i:i + batch], cols_t[i:i + batch])).argmax(1)
                best = min(best, time.perf_counter() - start)
    print(f"fastest batch: {batch / best:,.0f} px/s")
    return batch / best


def step_time(scene, batch: int = 64, steps: int = 40) -> dict[str, float]:
    """The fastest of ``steps`` training steps (forward, loss, backward, AdamW) of the official
    configuration's model on batches of the scene's training pixels, and the epoch it implies."""
    from geolesf.methods.hsi.s2mamba import S2Mamba
    from geolesf.predict.patches import PatchGatherer

    torch.manual_seed(0)
    model = S2Mamba(scene.num_features, scene.num_classes, 7, dropout=0.4).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=5e-3)
    gather = PatchGatherer(np.asarray(scene.features), 7, "symmetric")
    r, c = np.nonzero(scene.split.train)
    rows, cols, labels = torch.as_tensor(r), torch.as_tensor(c), torch.as_tensor(scene.y[r, c])
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))
    best = float("inf")
    for i in range(steps):
        idx = order[(i * batch) % (len(rows) - batch):][:batch]
        x, y = gather(rows[idx], cols[idx]), labels[idx]
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            best = min(best, time.perf_counter() - start)
    per_epoch = best * -(-len(rows) // batch)
    print(f"fastest training step: {best * 1e3:.0f} ms (batch {batch}) -> {per_epoch:.2f} s of steps per epoch")
    return {"best_step_seconds": best, "steps_per_epoch": -(-len(rows) // batch), "best_step_epoch_seconds": per_epoch}


def epoch_time(epochs: int) -> dict[str, object]:
    from geolesf.config import TrainConfig, load_config
    from geolesf.methods.hsi.patch_training import train_patch_model
    from geolesf.methods.hsi.train import prepare_scene

    data = os.environ.get("GEOLESF_DATA")
    if data and Path(data, "indian_pines_fixed_split").is_dir():
        cfg_path, split = ROOT / "geolesf/configs/s2mamba/indian_pines.yaml", "fixed (SpectralFormer maps)"
    else:
        cfg_path = ROOT / "geolesf/configs/s2mamba/indian_pines_random10.yaml"
        split = "random 10 % (fixed maps not available)"
    cfg = load_config(TrainConfig, cfg_path, ["trainer.epochs=1", "trainer.eval_every=0"])
    scene = prepare_scene(cfg)
    runs = {}
    for n in (1, 1 + epochs):  # the difference removes the fixed cost (setup, final model, plots)
        cfg = load_config(TrainConfig, cfg_path, [f"trainer.epochs={n}", "trainer.eval_every=0"])
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), time.process_time()
            train_patch_model(scene, cfg, Path(tmp))
            runs[n] = (time.perf_counter() - start, time.process_time() - cpu)
    (w1, c1), (wn, cn) = runs[1], runs[1 + epochs]
    per_epoch, marginal, marginal_cpu = wn / (1 + epochs), (wn - w1) / epochs, (cn - c1) / epochs
    n_train = int(scene.split.train.sum())
    print(f"training: {per_epoch:.2f} s/epoch end to end over {1 + epochs} epochs, {marginal:.2f} s per further epoch "
          f"({marginal_cpu:.2f} CPU-s) ({n_train} training px, batch {cfg.trainer.batch_size}, split {split}); "
          f"400 epochs ≈ {400 * marginal / 60:.1f} min")
    return {"split": split, "train_pixels": n_train, "epochs_timed": 1 + epochs, "seconds_per_epoch": per_epoch,
            "cpu_seconds_per_epoch": cn / (1 + epochs), "marginal_seconds_per_epoch": marginal,
            "marginal_cpu_seconds_per_epoch": marginal_cpu, "estimated_400_epochs_min": 400 * marginal / 60,
            **step_time(scene)}


def same_class_map() -> dict[str, float]:
    """The embedded checkpoint on the whole scene: fused forward vs the composed forward."""
    import geolesf.methods.hsi.s2mamba as s2m
    from geolesf.io.hsi import read_cube
    from geolesf.methods.hsi.checkpoint import load_any
    from geolesf.predict.patches import PatchGatherer

    ckpt = load_any("s2mamba:indian_pines_dase")
    cube = read_cube(ROOT / "geolesf/embedded/indian_pines/IP_200_M.mat").data
    x = ckpt.normalise(ckpt.select_bands(cube, 2, "indian pines"))
    gather = PatchGatherer(x, ckpt.patch_size, ckpt.padding)
    rows, cols = (torch.from_numpy(a) for a in np.divmod(np.arange(x.shape[0] * x.shape[1]), x.shape[1]))
    model, fused_rule = ckpt.model.eval(), s2m.use_fused
    probs = {}
    for name, rule in (("fused", fused_rule), ("composed", lambda *_: False)):
        s2m.use_fused = rule
        try:
            with torch.inference_mode():
                probs[name] = torch.cat([model(gather(rows[i:i + 1024], cols[i:i + 1024])).softmax(1)
                                         for i in range(0, len(rows), 1024)])
        finally:
            s2m.use_fused = fused_rule
    differ = int((probs["fused"].argmax(1) != probs["composed"].argmax(1)).sum())
    diff = (probs["fused"] - probs["composed"]).abs().max().item()
    print(f"embedded checkpoint, whole scene: {differ} of {len(rows)} classes differ, max probability diff {diff:.1e}")
    return {"pixels": len(rows), "classes_differing": differ, "max_probability_diff": diff}


def machine_limit(per_pixel_scan_steps: int) -> dict[str, float]:
    """FLOPs per pixel of S²Mamba (P = 7, 200 bands) and a matmul's GFLOP/s on these threads."""
    from torch.utils.flop_counter import FlopCounterMode

    from geolesf.methods.hsi.s2mamba import S2Mamba

    model = S2Mamba(200, 16, 7).eval()
    x = torch.randn(64, 200, 7, 7)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    dense = counter.get_total_flops() / 64
    scan = 15 * 16 * per_pixel_scan_steps
    a = torch.randn(2048, 2048)
    torch.mm(a, a)
    start = time.perf_counter()
    for _ in range(5):
        torch.mm(a, a)
    gflops = 5 * 2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9
    limit = gflops * 1e9 / (dense + scan)
    print(f"limit: {dense / 1e6:.1f} MFLOP/px in matmuls/convs + {scan / 1e6:.1f} MFLOP/px in scans; "
          f"matmul {gflops:.0f} GFLOP/s here -> at most ≈ {limit:,.0f} px/s")
    return {"dense_mflop_per_pixel": dense / 1e6, "scan_mflop_per_pixel": scan / 1e6,
            "matmul_gflops": gflops, "pixels_per_second_at_matmul_rate": limit}


def against_limit(result: dict) -> None:
    """Fractions of the matmul-rate limit reached by the measured figures (added to result['limit'])."""
    lim = result["limit"]
    flop = (lim["dense_mflop_per_pixel"] + lim["scan_mflop_per_pixel"]) * 1e6
    lim["scene_fraction_of_limit"] = result["scene"]["cpu"]["pixels_per_second"] / lim["pixels_per_second_at_matmul_rate"]
    t = result.get("training")
    if t:
        # forward + backward ≈ 3 forwards per training pixel and epoch
        lim["training_seconds_per_epoch_at_matmul_rate"] = 3 * flop * t["train_pixels"] / (lim["matmul_gflops"] * 1e9)
        lim["training_fraction_of_limit"] = lim["training_seconds_per_epoch_at_matmul_rate"] / t["marginal_seconds_per_epoch"]
    print("of the matmul-rate limit: scene {:.0%}".format(lim["scene_fraction_of_limit"])
          + (", training {:.0%}".format(lim["training_fraction_of_limit"]) if t else ""))


def baseline_run(rev: str, epochs: int, skip_training: bool, reference_pixels: int) -> dict[str, object]:
    """This benchmark (this script, same measurements) run on the code of git revision ``rev``,
    extracted into a temp folder and put first on ``PYTHONPATH`` of a subprocess."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        out = Path(tmp, "result.json")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--epochs", str(epochs), "--reference-pixels",
               str(reference_pixels), "--skip-class-map", "--out", str(out)] + (["--skip-training"] if skip_training else [])
        env = {**os.environ, "PYTHONPATH": tmp}
        if subprocess.run(cmd, env=env, cwd=tmp).returncode != 0 and not skip_training:
            # an old revision may not run today's training config: its inference figures still count
            print(f"baseline {rev}: training failed; measuring inference only")
            subprocess.run([*cmd, "--skip-training"], check=True, env=env, cwd=tmp)
        old = json.loads(out.read_text())
    return {"rev": rev, "scene": old["scene"], "training": old.get("training"),
            "load_average_1_5_15_min": old.get("load_average_1_5_15_min")}


def _speedups(result: dict, base: dict) -> dict[str, float]:
    new_s, old_s = result["scene"]["cpu"], base["scene"]["cpu"]
    speedup = {"scene_cpu": new_s["pixels_per_second"] / old_s["pixels_per_second"],
               "scene_cpu_per_cpu_second": new_s["pixels_per_cpu_second"] / old_s["pixels_per_cpu_second"],
               "scene_cpu_best_batch": new_s["best_batch_pixels_per_second"] / old_s["best_batch_pixels_per_second"]}
    new_t, old_t = result.get("training"), base.get("training")
    if new_t and old_t:
        for key in ("seconds_per_epoch", "cpu_seconds_per_epoch", "marginal_seconds_per_epoch",
                    "marginal_cpu_seconds_per_epoch", "best_step_epoch_seconds"):
            speedup[f"training_{key}"] = old_t[key] / new_t[key]
    return speedup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reference-pixels", type=int, default=2048)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-class-map", action="store_true", help="skip the fused-vs-composed class map check")
    parser.add_argument("--baseline", metavar="REV", action="append", default=[],
                        help="also run this benchmark on the code of git revision REV (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load_before = os.getloadavg()
    # CPU backends only: the mamba_ssm kernel needs CUDA (timed separately when a GPU is available).
    result = {"scene": scene_throughput(["reference", "cpu"], args.reference_pixels), "machine": machine_info()}
    if not args.skip_class_map:
        result["class_map"] = same_class_map()
    if not args.skip_training:
        result["training"] = epoch_time(args.epochs)
    # scan steps per pixel: PCS 4 directions x 128 channels x 49 steps, BSS 2 x 49 x 128
    result["limit"] = machine_limit(4 * 128 * 49 + 2 * 49 * 128)
    against_limit(result)
    baselines = []
    for rev in args.baseline:
        base = baseline_run(rev, args.epochs, args.skip_training, min(args.reference_pixels, 256))
        speedup = _speedups(result, base)
        baselines.append({**base, "speedup": speedup})
        print(f"vs {rev}: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items()))
    if baselines:
        result["baseline"] = baselines[0]
        result["baselines"] = baselines
    result["load_average_1_5_15_min"] = {"before": list(load_before), "after": list(os.getloadavg())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
