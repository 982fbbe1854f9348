"""Regenerate the tables of ``benchmarks/README.md`` from ``benchmarks/results/*.json``.

Every benchmark script writes its JSON (both sides of each ratio measured in the same run, plus
the machine); this script only formats them, between the ``<!-- tables -->`` markers.

    python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(m: dict) -> str:
    return f"{m.get('cpu', '?')}, {m.get('threads', m.get('torch_threads', m.get('logical_cpus', '?')))} threads, torch {m.get('torch', '?')}"


def cli_table() -> list[str]:
    r = _load("cli_startup")
    if not r:
        return []
    return [
        "### CLI start-up (`python benchmarks/bench_cli_startup.py`)", "",
        "| command | median s |", "|---|---|",
        f"| `geolesf --help` | {r['geolesf_help_s']:.3f} |",
        f"| `python -c 'import torch'` | {r['import_torch_s']:.3f} |",
        "", f"Ratio **{r['ratio']:.3f}** (target ≤ {r['target_ratio_max']}). Machine: {_machine(r['machine'])}.", "",
    ]


def predict_imports_table() -> list[str]:
    r = _load("predict_imports")
    if not r:
        return []
    lines = ["### Predict-path imports (`python benchmarks/bench_predict_imports.py`)", "",
             "| checkpoint | `import torch` s | predict path beyond torch s | Lightning imported |", "|---|---|---|---|"]
    for name in ("s2mamba", "unet"):
        x = r[name]
        lines.append(f"| {name} | {x['torch_s']:.3f} | {x['predict_path_s']:.3f} | {x['lightning_imported']} |")
    lines += ["", f"Goal ≤ {r['goal_predict_path_s_max']} s beyond torch, medians of {r['repeats']} fresh "
              f"interpreters. Machine: {_machine(r['machine'])}.", ""]
    return lines


def scan_table(name: str = "scan") -> list[str]:
    r = _load(name)
    if not r:
        return []
    env = r.get("environment") or {}
    cond = ("environment: " + ", ".join(f"`{k}={v}`" for k, v in sorted(env.items())) if env
            else "default process environment")
    if r.get("heap") == "geolesf":
        cond += "; heap pinned as geolesf's S²Mamba trainer pins it (`--heap geolesf`)"
    lines = [
        f"### Selective scan, forward + backward (`python benchmarks/bench_scan.py`, `results/{name}.json`)", "",
        f"Batch {r['batch']}, {r['dtype']}, median of {r['repeats']}; {cond}. Machine: {_machine(r['machine'])}.", "",
        "| shape | per-step loop s | mambapy s | reference s | geolesf cpu s | cpu vs loop | cpu vs mambapy | max abs err vs float64 reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for name, s in r["shapes"].items():
        sec = s["seconds"]
        lines.append(
            f"| {name} (C={s['channels']}, L={s['L']}, K={s['K']}, N={s['N']}) | {sec.get('loop', nan):.3f} "
            f"| {sec.get('mambapy', nan):.3f} | {sec.get('reference', nan):.3f} | {sec['cpu']:.3f} "
            f"| {sec.get('loop', nan) / sec['cpu']:.1f}× | {sec.get('mambapy', nan) / sec['cpu']:.1f}× "
            f"| {s.get('max_abs_err_cpu_vs_reference', nan):.2e} |"
        )
    lines += ["", "Targets: cpu ≥ 40× mambapy at batch 256 (issue #21; ≥ 5× the loop, ≥ 2× mambapy before), "
              "max abs error ≤ 1e-5 (float32); nan: method not run in that benchmark run.", ""]
    return lines


def accuracy_table() -> list[str]:
    rows = []
    base = _load("baselines")
    if base:
        for r in base["results"]:
            rows.append((r["model"], r["split"], r["train_pixels"], r["test_pixels"], r["OA"], r["AA"], r["kappa"],
                         r["leakage_fraction_7x7"], "seed 0"))
    s2m = _load("s2mamba_accuracy")
    if s2m:
        for r in s2m["runs"]:
            rows.append(("s2mamba", r["split"], r["train_pixels"], r["test_pixels"], r["OA"], r["AA"], r["kappa"],
                         r["leakage_fraction"], r.get("note", "")))
    if not rows:
        return []
    lines = [
        "### Indian Pines accuracy (embedded 8-bit cube; test pixels of each split)", "",
        "Baselines: `python benchmarks/bench_baselines.py`; S²Mamba: `python benchmarks/bench_s2mamba_accuracy.py` "
        "(collects the run folders listed in its JSON).", "",
        "| model | split | train px | test px | OA | AA | κ | test patches (7×7) seeing a training px | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"random": 0, "fixed": 1, "dase": 2, "disjoint": 3}
    for row in sorted(rows, key=lambda r: (order.get(r[1], 9), r[0])):
        m, split, ntr, nte, oa, aa, k, leak, note = row
        lines.append(f"| {m} | {split} | {ntr:,} | {nte:,} | {oa:.4f} | {aa:.4f} | {k:.4f} | {leak:.1%} | {note} |")
    lines.append("")
    return lines


def s2mamba_speed_table() -> list[str]:
    r = _load("s2mamba")
    if not r:
        return []
    lines = ["### S²Mamba speed (`python benchmarks/bench_s2mamba.py`)", "",
             f"Machine: {_machine(r['machine'])}.", "",
             "| what | backend | figure |", "|---|---|---|"]
    for backend, s in r["scene"].items():
        lines.append(f"| whole-scene map, Indian Pines ({s['pixels']:,} px timed) | {backend} | {s['pixels_per_second']:,.0f} px/s |")
    t = r.get("training")
    if t:
        lines.append(f"| training, official Indian Pines config ({t['split']}, {t['train_pixels']} px, batch 64) | cpu "
                     f"| {t['seconds_per_epoch']:.2f} s/epoch (400 epochs ≈ {t['estimated_400_epochs_min']:.0f} min) |")
    base = r.get("baseline")
    if base:
        for key, value in base["speedup"].items():
            lines.append(f"| speed-up over revision `{base['rev']}` (run right after, same machine) | cpu "
                         f"| {key}: {value:.2f}× |")
    lim = r.get("limit")
    if lim:
        lines.append(f"| limit: {lim['dense_mflop_per_pixel']:.1f} MFLOP/px matmul+conv, {lim['scan_mflop_per_pixel']:.1f} "
                     f"MFLOP/px scans; float32 matmul {lim['matmul_gflops']:.0f} GFLOP/s | — "
                     f"| ≈ {lim['pixels_per_second_at_matmul_rate']:,.0f} px/s at matmul rate |")
    lines.append("")
    return lines


def s2mamba_cputime_table() -> list[str]:
    r = _load("s2mamba_cputime")
    if not r:
        return []
    lines = ["### S²Mamba CPU time, interleaved with earlier revisions (`python benchmarks/bench_s2mamba_cputime.py`)", "",
             f"One thread, thread CPU time, best of 5 per run and of the interleaved rounds. Machine: {_machine(r['machine'])}.", "",
             "| code | inference, 256 px | training step, 64 px |", "|---|---|---|"]
    for name, b in r["best"].items():
        lines.append(f"| {name} | {b['infer_256_cpu_s'] * 1e3:.0f} ms | {b['train_step_64_cpu_s'] * 1e3:.0f} ms |")
    for rev, sp in r["speedup"].items():
        lines.append(f"| speed-up over `{rev}` | {sp['infer_256_cpu_s']:.2f}× | {sp['train_step_64_cpu_s']:.2f}× |")
    lines.append("")
    return lines


def gpu_table() -> list[str]:
    r = _load("gpu")
    if not r:
        return []
    lines = ["### On a lent GPU (`python benchmarks/bench_gpu.py`)", "",
             f"Machine: {r['device']}, torch {r['torch']} (CUDA {r['cuda']}), mamba_ssm {r['mamba_ssm'] or 'absent'} "
             "(built from its PyPI sdist for sm_90 on that machine). Float32 inputs; errors against the "
             "reference backend run in float64 (batch 64).", "",
             "| scan shape | backend | max abs err y / grads | fwd B256 | fwd+bwd B256 | fwd B1024 | fwd+bwd B1024 |",
             "|---|---|---|---|---|---|---|"]
    for shape, e in r.get("scan", {}).items():
        for backend in r["backends"]:
            err = e["max_abs_err_vs_reference_float64"][backend]
            t = {b: e["seconds"][f"{backend}/B{b}"] for b in (256, 1024)}
            lines.append(f"| {shape} | {backend} | {err['y']:.1e} / {err['grads']:.1e} | "
                         + " | ".join(f"{t[b][k] * 1e3:.2f} ms" for b in (256, 1024) for k in ("forward", "forward_backward"))
                         + " |")
    inf = r.get("s2mamba_inference", {})
    if "runs" in inf:
        lines += ["", "| S²Mamba | backend | figure |", "|---|---|---|"]
        for key, v in inf["runs"].items():
            backend, batch = key.split("/")
            agree = inf["class_agreement_with_cpu_backend"].get(backend, float("nan"))
            lines.append(f"| whole-scene map, Indian Pines, batch {batch[1:]} | {backend} | "
                         f"{v['pixels_per_second']:,.0f} px/s (classes equal to cpu backend: {agree:.1%}) |")
        for backend, v in r.get("s2mamba_training", {}).items():
            if isinstance(v, dict):
                lines.append(f"| training epoch, 10 % random split ({v['train_pixels']} px, batch 64, plain loop) | "
                             f"{backend} | {v['seconds_per_epoch']:.3f} s/epoch |")
    scan = r.get("scan", {})
    if all(k in scan for k in ("PCS", "BSS")) and "reference" in r["backends"]:
        slow = [scan[k]["seconds"]["cpu/B1024"]["forward_backward"] / scan[k]["seconds"]["reference/B1024"]["forward_backward"]
                for k in ("PCS", "BSS")]
        lines += ["", f"- On CUDA tensors the `cpu` backend's chunked PyTorch path is {min(slow):.1f}–{max(slow):.1f}× slower "
                  "than `reference` (fwd+bwd, B 1024): it is built for CPU caches, and `auto` falls back to it when "
                  "mamba_ssm is absent. Measured here so that #21 can route `auto` on CUDA."]
    lines.append("")
    return lines


def _load_note(m: dict) -> str:
    a, b = m.get("load_average_1min_at_start"), m.get("load_average_1min_at_end")
    return f", 1-min load average {a:.1f} at start, {b:.1f} at end (shared machine)" if a is not None else ""


def predict_table(name: str = "predict", flag: str = "") -> list[str]:
    r = _load(name)
    if not r:
        return []
    lines = [f"### Tiled prediction (`python benchmarks/bench_predict.py{flag}`)", "",
             f"Model {r['model']['name']} (random init), tile {r['tile']}, overlap {r['overlap']}, batch {r['batch']}, "
             f"input layout {r.get('memory_format', 'NCHW')}. Machine: {_machine(r['machine'])}{_load_note(r['machine'])}.",
             "", "| scene | tile/batch | tiles | computed/scene px | seconds | Mpx/s | peak RSS MB (median; each run) |",
             "|---|---|---|---|---|---|---|"]
    for size, run in r["runs"].items():
        peaks = run.get("peak_rss_runs", [run["peak_rss"]])
        median = run.get("peak_rss_median", run["peak_rss"])
        each = " / ".join(f"{x / 2**20:,.0f}" for x in peaks)
        waste = f"{run['waste']:.3f}" if "waste" in run else ""
        lines.append(f"| {size}² | {run.get('tile', r['tile'])}/{run.get('batch', r['batch'])} | {run['tiles']} | "
                     f"{waste} | {run['seconds']:.1f} | {run['mpx_per_s']:.2f} | {median / 2**20:,.0f} ({each}) |")
    worst = r.get("memory_ratio_worst_pair")
    lines += ["", f"- memory ratio 16384² / 4096² (fresh process per run): medians **{r['memory_ratio']:.4f}**"
              + (f", worst pair (largest 16384² peak / smallest 4096² peak) **{worst:.4f}**" if worst else "")
              + " (target ≤ 1.15 in every run)",
              f"- predict vs bare forward on the same tiles (or pixels): {r['overhead_ratio_same_tiles']:.2f}× "
              f"(target ≥ 0.8×); scene px/s vs bare forward px/s {r['scene_ratio_vs_bare']:.2f}×; share of predict time inside the model's forward: {r['forward_share_of_predict_time']:.2f}"]
    if "bare_forward_gflops" in r:
        lim = r["runs"][min(r["runs"], key=int)]["limits"]
        lines.append(f"- limit: {lim['flops_per_px']:,.0f} FLOP/px; the bare forward reaches {r['bare_forward_gflops']:.1f} "
                     f"GFLOP/s = {r['bare_forward_share_of_matmul_peak']:.2f} of a 2048² float32 matmul "
                     f"({lim['matmul_gflops']:.0f} GFLOP/s; 3×3 conv 64→64: {lim['conv_gflops']:.0f} GFLOP/s); "
                     f"channels-last vs NCHW bare forward {r['channels_last_vs_nchw_bare']:.2f}×")
    lines += ["- peer comparison: next table (`bench_predict_peer.py`)" if not flag else "", ""]
    return lines


def predict_peer_table() -> list[str]:
    r = _load("predict_peer")
    if not r:
        return []
    lines = ["### Tiled prediction against geoai-py (`python benchmarks/bench_predict_peer.py`)", "",
             f"Same model ({r['model']}), same mosaic of real Landsat pixels, tile {r['tile']}, overlap "
             f"{r['overlap']}, batch {r['batch']} (geolesf-auto: `tile=\"auto\"`, default memory budget), {r['blend']} blending, {r['threads']} threads, each predictor in "
             f"a fresh process; geolesf input layout {r.get('memory_format', 'NCHW')}. geoai-py "
             f"{r.get('geoai_version', '?')} (`predict_geotiff`), installed only for the "
             f"benchmark. Machine: {_machine(r['machine'])}{_load_note(r['machine'])}.", "",
             "| predictor | scene | tile/batch | computed/scene px | seconds | Mpx/s | peak RSS MB | 1-min load | output |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, run in r["runs"].items():
        which, size = key.split("_")
        out = run.get("output", "")
        waste = f"{run['waste']:.3f}" if "waste" in run else ""
        tiling = f"{run.get('tile', r['tile'])}/{run.get('batch', r['batch'])}"
        load = (f"{run['load_1min_at_start']:.1f}–{run['load_1min_at_end']:.1f}"
                if "load_1min_at_start" in run else "")
        lines.append(f"| {which} | {size}² | {tiling} | {waste} | {run['seconds']:.1f} | {run['mpx_per_s']:.3f} | "
                     f"{run['peak_rss'] / 2**20:,.0f} | {load} | {out} |")
    lines.append("")
    for size, q in r.get("ratios", {}).items():
        lines += _peer_ratio_lines(size, q)
    if r.get("ratios"):
        lines.append("")
    return lines


def _peer_ratio_lines(size: str, q: dict) -> list[str]:
    """The ratio bullets of one scene size of ``bench_predict_peer.py`` (fixed 512 tiles and, if run, auto)."""
    lines = []
    for name, label in (("", "geolesf (tile 512)"), ("auto_", "geolesf --tile auto")):
        if f"{name}px_per_s_vs_geoai" not in q:
            continue
        norm = (f" (load-normalised {q[f'{name}px_per_s_vs_geoai_load_normalised']:.2f}×, per CPU second "
                f"{q[f'{name}px_per_cpu_s_vs_geoai']:.2f}×)" if f"{name}px_per_s_vs_geoai_load_normalised" in q else "")
        bare = (f"; scene px/s {q[f'{name}scene_rate_vs_bare_forward']:.2f} of the bare forward's (per computed "
                f"px {q[f'{name}predict_vs_bare_forward_same_pixels']:.2f})"
                if f"{name}scene_rate_vs_bare_forward" in q else "")
        lines.append(f"- {size}², {label} / geoai-py: px/s **{q[f'{name}px_per_s_vs_geoai']:.2f}×**{norm}, peak RSS "
                     f"**{q[f'{name}peak_rss_vs_geoai']:.3f}×** (targets at 8192²: ≥ 1.3×, ≤ 0.25×){bare}")
    if "auto_vs_512_px_per_s" in q:
        lines.append(f"- {size}², --tile auto / tile 512 (same run): px/s **{q['auto_vs_512_px_per_s']:.2f}×** "
                     f"(load-normalised {q['auto_vs_512_px_per_s_load_normalised']:.2f}×), peak RSS "
                     f"{q['auto_vs_512_peak_rss']:.2f}×, computed/scene px {q['auto_waste']:.3f} vs {q['waste']:.3f}")
    if "bare_forward_gflops" in q:
        lines.append(f"- {size}²: predict / bare forward on the same 512 tiles {q['predict_vs_bare_forward_same_tiles']:.2f}; "
                     f"bare forward {q['bare_forward_gflops']:.1f} GFLOP/s = {q['bare_forward_share_of_matmul_peak']:.2f} "
                     f"of the float32 matmul peak; channels-last vs NCHW bare forward {q['bare_channels_last_vs_nchw']:.2f}×")
    return lines


def distributed_table() -> list[str]:
    r = _load("distributed")
    if not r:
        return []
    sp = r["single_process"]
    lines = [
        "### Distributed prediction, dask LocalCluster (`python benchmarks/bench_distributed.py`)", "",
        f"{r['scenes']} mosaics of real Landsat pixels, {r['size']}² each ({r['megapixels']:.1f} Mpx), "
        f"{r['model']['name']} {r['model']['args']} (random init), tile {r['tile']}, overlap {r['overlap']}, "
        f"block {r['block']}, part rows {r['part_rows'] or 'default'}; workers single-threaded. "
        f"Machine: {_machine(r['machine'])}, 1-min load average {r.get('load_average_1min_at_start', float('nan')):.1f} "
        "at start (shared machine: timings are noisy).", "",
        "| run | seconds (best; all runs) | Mpx/s | tiles computed / tiles | output bytes = single process |",
        "|---|---|---|---|---|",
        f"| single process, 1 thread | {sp['seconds']:.1f} | {sp['mpx_per_s']:.2f} | {sp['tiles']} / {sp['tiles']} | reference |",
    ]
    for name, run in r["runs"].items():
        runs = " / ".join(f"{x:.1f}" for x in run.get("all_seconds", [run["seconds"]]))
        lines.append(f"| {name.replace('_', ' ')} | {run['seconds']:.1f} ({runs}) | {run['mpx_per_s']:.2f} | "
                     f"{run['tiles_computed']} / {run['tiles']} | {'yes' if run['identical_bytes'] else '**no**'} |")
    f, t = r["fault_test"], r["per_tile"]
    probe = r.get("machine_parallel_scaling") or [float("nan")]
    lines += [
        "", f"- 2 workers vs 1: **{r['speedup_2_vs_1_workers']:.2f}×**; the machine itself gave "
        f"{' / '.join(f'{p:.2f}×' for p in probe)} for a pure compute kernel in 2 processes vs 1 (before / after) "
        "— the ceiling here; recomputed tile rows at part starts: "
        f"+{r['recompute_overhead']:.0%} tiles",
        f"- worker killed (SIGKILL) {f.get('killed_after_s', float('nan')):.1f} s into the run with "
        f"{f.get('parts_in_flight', '?')} part(s) assigned to it: job completed in {f.get('seconds', float('nan')):.1f} s, "
        f"identical bytes: **{'yes' if f.get('identical_bytes') else 'no'}**",
        f"- per tile: forward {t['forward_ms']:.1f} ms, read {t['read_ms']:.2f} ms, blend/accumulate "
        f"{t['blend_accumulate_ms']:.2f} ms; driver assembly {t['assemble_ms_per_output_tile']:.2f} ms per output "
        f"tile; I/O share {t['io_share']:.1%}",
        f"- CPU the parts obtained (CPU s per wall s): 1 worker {r['cores_obtained']['workers_1']:.2f}, 2 workers "
        f"{r['cores_obtained']['workers_2']:.2f} (2.0 on two idle cores); CPU ms per tile {t['cpu_ms_1_worker']:.0f} "
        f"vs {t['cpu_ms_2_workers']:.0f}, wall ms per tile {t['wall_ms_1_worker']:.0f} vs {t['wall_ms_2_workers']:.0f}",
        "",
    ]
    return lines


def envi_read_table() -> list[str]:
    r = _load("envi_read")
    if not r:
        return []
    lines = ["### ENVI reads (`python benchmarks/bench_envi_read.py`)", "",
             f"{r['cube']}, best of {r['repeats']}. Machine: {_machine(r['machine'])}.", "",
             "| interleave | GDAL's ENVI driver | `read_envi` (memory map) | ratio | 64×64 window via `open_cube` |",
             "|---|---|---|---|---|"]
    for name, v in r["results"].items():
        lines.append(f"| {name} | {v['gdal_driver_ms']:.0f} ms | {v['read_envi_ms']:.0f} ms | "
                     f"{v['gdal_driver_ms'] / v['read_envi_ms']:.1f}× | {v['open_cube_64x64_window_ms']:.0f} ms |")
    lines.append("")
    return lines


def large_scene_table() -> list[str]:
    r = _load("large_scene")
    if not r or not {"rf", "s2mamba", "predict_strip", "crop_ratio"} <= set(r.get("runs", {})):
        return []
    import sys

    sys.path.insert(0, str(HERE))
    from bench_large_scene import table

    note = f"- {r['note']}" if r.get("note") else ""
    return ["### Scene larger than memory (`python benchmarks/bench_large_scene.py`)", "", table(r), "",
            "- every run with the current defaults stays under the target; the in-memory path on a 1,000² crop already needs more than the "
            "windowed path on the 7 GB scene",
            "- S²Mamba maps of the whole scene were not run on these 2 CPU cores: the hours above are "
            "extrapolated from the measured rates (an idle machine gave ~1,400 px/s at 200 bands, "
            "`bench_s2mamba.py`: ~3 h)", note, "", f"Machine: {_machine(r['machine'])}.", ""]


def onnx_table() -> list[str]:
    r = _load("onnx")
    if not r:
        return []
    lines = ["### ONNX export, `--engine onnxruntime` vs PyTorch (`python benchmarks/bench_onnx.py`)", "",
             "| model | scene | graph nodes | torch px/s | onnxruntime px/s | ratio | torch peak RSS MB "
             "| onnxruntime peak RSS MB | equal class map |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("unet", "s2mamba"):
        x = r[name]
        lines.append(f"| {name} | {x['scene']} | {x['graph_nodes']:,} | {x['torch']['px_per_s']:,.0f} "
                     f"| {x['onnxruntime']['px_per_s']:,.0f} | {x['onnx_vs_torch_px_per_s']:.2f}× "
                     f"| {x['torch']['peak_rss_mb']:.0f} | {x['onnxruntime']['peak_rss_mb']:.0f} "
                     f"| {100 * x['equal_class_map_fraction']:.2f} % |")
    lines += ["", "Same tiled predictor, each run in a fresh process (peak RSS includes the imports); S²Mamba's "
              "graph unrolls the selective scan, PyTorch runs the C scan kernel. No floor. "
              f"Machine: {_machine(r['machine'])}.", ""]
    return lines


def weak_labels_table(name: str = "weak_labels", rows: str = "") -> list[str]:
    r = _load(name)
    if not r:
        return []
    t = r["trainer"]
    lines = [f"### Weak labels → dense map{rows} (`python benchmarks/bench_weak_labels.py`, `results/{name}.json`)", "",
             "unet trained on the left half of each scene from labels derived (seeded) from its full mask; mIoU on the "
             "spatially separate right half against its full mask, mean ± std over seeds "
             f"{', '.join(map(str, r['seeds']))}.", "",
             "| scene | labels | labelled px | test mIoU |", "|---|---|---|---|"]
    for scene, x in r["scenes"].items():
        for row, s in x["summary"].items():
            lines.append(f"| {scene} | {row} | {100 * s['labelled_share_mean']:.3f} % | "
                         f"{s['test_mIoU_mean']:.3f} ± {s['test_mIoU_std']:.3f} |")
    lines += ["", f"Budget per run: {t['epochs']} epochs × {t['steps_per_epoch']} steps, chips {t['chip']} px, batch "
              f"{t['batch_size']}, unet {r['model_args']}, class weights {t.get('class_weights', 'none')}, chip "
              f"sampling {t.get('chip_sampling', 'uniform')}; {r['points_per_class']} points per class. "
              f"Machine: {_machine(r['machine'])}.", ""]
    if r.get("note"):
        lines[-1:-1] = ["", r["note"]]
    return lines


def main() -> None:
    body = [*cli_table(), *predict_imports_table(), *scan_table(), *scan_table("scan_heap"), *accuracy_table(), *s2mamba_speed_table(),
            *s2mamba_cputime_table(), *gpu_table(),
            *predict_table(), *predict_table("predict_auto", " --tile auto"), *predict_peer_table(), *distributed_table(), *envi_read_table(), *large_scene_table(),
            *onnx_table(), *weak_labels_table(), *weak_labels_table("weak_labels_boxes", ": boxes"),
            *weak_labels_table("weak_labels_noisy", ": noisy masks"),
            *weak_labels_table("weak_labels_boxes_budget30", ": boxes, 30 epochs of 96-px chips"),
            *weak_labels_table("weak_labels_boxes_things", ": boxes around object classes only, 30 epochs of 96-px chips")]
    text = README.read_text() if README.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(head + BEGIN + "\n" + "\n".join(body) + END + tail)
    print(f"updated {README}")


if __name__ == "__main__":
    main()
