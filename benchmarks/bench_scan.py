"""Benchmark the selective scan backends at S²Mamba shapes (float32, CPU).

Times forward + backward (gradients w.r.t. all seven inputs) for

* ``loop``      a plain per-step PyTorch loop differentiated by autograd (baseline);
* ``mambapy``   the pure-PyTorch Blelloch parallel scan of the ``mambapy`` package
                (``mambapy.pscan``, adapted to its (B, L, D, N) contract);
* ``reference`` geolesf's ``reference`` backend;
* ``cpu``       geolesf's ``cpu`` backend (on AVX-512 CPUs the intrinsics kernels of
                ``scan_kernel_avx512*.h``: 16-lane channel blocks plus item-lane blocks for a
                group's leftover channels; 8-channel portable blocks elsewhere),

and the max abs error of ``cpu`` (float32) against ``reference`` in float64 (the float32
reference's own error is recorded beside it). Writes
``benchmarks/results/scan.json`` and prints a Markdown table.

Two conditions, both committed (the JSON records the condition and the ``OMP_*``/``MALLOC_*`` variables):

* ``results/scan.json``: the process as a user's script gets it (glibc's own heap settings);
* ``results/scan_heap.json`` (``--heap geolesf``): the heap setting geolesf's S²Mamba trainer and
  per-pixel predictors pin (``geolesf.predict.batching.pin_mmap_threshold(kind="pixel")``: glibc's
  mmap threshold 256 MiB, trim threshold 512 MiB), applied before any method is timed, so to all
  alike. With glibc's defaults the freshly allocated outputs (y, du, d(delta), dB, dC: 47 MB per
  BSS call at batch 256) are returned to the kernel when freed and faulted in and zeroed page by page
  on the next call; with the pinned heap they are reused. Measured on the BSS shape in a loop of 20
  calls: the two kernel calls take 5 + 9 ms either way, the whole forward + backward 18-24 ms by default and
  15 ms pinned. In this benchmark's median of 7 the two conditions came out within run-to-run noise of
  each other (15-18 ms in four runs), as did mambapy (0.75-1.06 s).

The native kernels run on PyTorch's own OpenMP team (``geolesf.ops.selective_scan.native.run_kernel``),
so no second set of threads competes with the worker PyTorch's previous op left spinning.

Usage::

    python benchmarks/bench_scan.py            # batch 256 (the shape of issue #21's targets)
    python benchmarks/bench_scan.py --heap geolesf --out benchmarks/results/scan_heap.json
    python benchmarks/bench_scan.py --quick    # batch 64 smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from geolesf.ops.selective_scan import selective_scan
from geolesf.provenance import machine_info

SHAPES = {
    # name: (K, D per direction, L, N)
    "PCS": (4, 128, 49, 16),  # channels 512, L = P² = 49
    "BSS": (2, 49, 128, 16),  # channels 98 = 2·P², L = 128
}


def make_inputs(batch, K, Dk, L, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    KD = K * Dk
    u = torch.randn(batch, KD, L, generator=g)
    delta = torch.randn(batch, KD, L, generator=g) * 0.5 - 1.0
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(KD, 1) * (0.5 + torch.rand(KD, 1, generator=g))
    B = torch.randn(batch, K, N, L, generator=g)
    C = torch.randn(batch, K, N, L, generator=g)
    D = torch.randn(KD, generator=g)
    bias = torch.randn(KD, generator=g) * 0.1
    return [u, delta, A, B, C, D, bias]


def scan_loop(u, delta, A, B, C, D, bias):
    """Baseline: a plain per-step PyTorch loop differentiated by autograd.

    Written the sensible way (it is mambapy's own ``selective_scan_seq``): the decay and
    input terms are computed vectorised in (batch, L, channels, N) layout and the steps are
    taken with ``unbind`` so that autograd does not materialise a full-size gradient per
    step, as plain indexing (``x[:, :, t]``) would.
    """
    K = B.shape[1]
    rep = u.shape[1] // K
    dt = F.softplus(delta + bias[:, None]).transpose(1, 2)  # (B, L, KD)
    Bl = B.permute(0, 3, 1, 2).repeat_interleave(rep, 2)  # (B, L, KD, N)
    Cl = C.permute(0, 3, 1, 2).repeat_interleave(rep, 2)
    dA = torch.exp(dt.unsqueeze(-1) * A)
    BX = dt.unsqueeze(-1) * Bl * u.transpose(1, 2).unsqueeze(-1)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for dA_t, BX_t, C_t in zip(dA.unbind(1), BX.unbind(1), Cl.unbind(1)):
        h = dA_t * h + BX_t
        ys.append((h * C_t).sum(-1))
    return torch.stack(ys, -1) + D[:, None] * u


def scan_mambapy(u, delta, A, B, C, D, bias):
    """mambapy's parallel scan: inputs rearranged to its (B, L, D, N) contract."""
    from mambapy.pscan import pscan

    K = B.shape[1]
    rep = u.shape[1] // K
    dt = F.softplus(delta + bias[:, None]).transpose(1, 2)  # (B, L, KD)
    x = u.transpose(1, 2)
    Bl = B.repeat_interleave(rep, 1).permute(0, 3, 1, 2)  # (B, L, KD, N)
    Cl = C.repeat_interleave(rep, 1).permute(0, 3, 1, 2)
    deltaA = torch.exp(dt.unsqueeze(-1) * A)  # (B, L, KD, N)
    BX = dt.unsqueeze(-1) * Bl * x.unsqueeze(-1)
    hs = pscan(deltaA, BX)
    y = (hs * Cl).sum(-1) + D * x
    return y.transpose(1, 2)


def scan_geolesf(backend):
    def fn(u, delta, A, B, C, D, bias):
        return selective_scan(u, delta, A, B, C, D, bias, delta_softplus=True, backend=backend)

    return fn


def time_fwd_bwd(fn, inputs, repeats, warmup):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    times = []
    for i in range(warmup + repeats):
        for t in leaves:
            t.grad = None
        gc.collect()
        t0 = time.perf_counter()
        y = fn(*leaves)
        y.backward(torch.ones_like(y))
        dt = time.perf_counter() - t0
        del y
        if i >= warmup:
            times.append(dt)
    return statistics.median(times), times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 64, fewer repeats (smoke test)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--methods", default="loop,mambapy,reference,cpu")
    parser.add_argument("--heap", choices=("default", "geolesf"), default="default",
                        help="geolesf: pin the heap setting of geolesf's S²Mamba trainer first (see above)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scan.json"))
    args = parser.parse_args(argv)
    if args.heap == "geolesf":
        from geolesf.predict.batching import pin_mmap_threshold

        if not pin_mmap_threshold(kind="pixel"):
            parser.error("--heap geolesf: the heap setting could not be pinned (not glibc?)")

    torch.set_num_threads(2)
    batch = args.batch or (64 if args.quick else 256)
    repeats = args.repeats or (3 if args.quick else 5)
    methods = {
        "loop": scan_loop,
        "mambapy": scan_mambapy,
        "reference": scan_geolesf("reference"),
        "cpu": scan_geolesf("cpu"),
    }
    wanted = [m for m in args.methods.split(",") if m]
    results = {"machine": machine_info(), "batch": batch, "repeats": repeats, "dtype": "float32", "heap": args.heap, "shapes": {},
               "environment": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "MALLOC_"))}}
    load_before = os.getloadavg()  # the machine is shared: the JSON records how loaded it was
    for name, (K, Dk, L, N) in SHAPES.items():
        inputs = make_inputs(batch, K, Dk, L, N)
        entry = {"channels": K * Dk, "K": K, "L": L, "N": N, "seconds": {}, "all_seconds": {}}
        for m in wanted:
            try:
                med, all_t = time_fwd_bwd(methods[m], inputs, repeats, warmup=1)
            except ImportError as exc:
                print(f"skipping {m}: {exc}", file=sys.stderr)
                continue
            entry["seconds"][m] = med
            entry["all_seconds"][m] = all_t
            print(f"{name} {m}: {med:.3f} s (fwd+bwd, median of {repeats})", file=sys.stderr)
        # accuracy of cpu (float32) against the reference in float64 (forward and gradients); the
        # float32 reference's own error against float64 is recorded beside it for scale
        leaves_r = [t.double().requires_grad_() for t in inputs]
        leaves_c = [t.clone().requires_grad_() for t in inputs]
        yr = scan_geolesf("reference")(*leaves_r)
        yc = scan_geolesf("cpu")(*leaves_c)
        g = torch.randn(yr.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        gr = torch.autograd.grad(yr, leaves_r, g)
        gc_ = torch.autograd.grad(yc, leaves_c, g.float())
        entry["max_abs_err_cpu_vs_reference"] = (yr - yc.double()).abs().max().item()
        entry["max_abs_y"] = yr.abs().max().item()
        with torch.no_grad():
            y32 = scan_geolesf("reference")(*inputs)
        entry["max_abs_err_reference_f32_vs_f64"] = (yr - y32.double()).abs().max().item()
        entry["max_rel_grad_err_cpu_vs_reference"] = max(
            ((a - b.double()).abs().max() / a.abs().max().clamp_min(1e-30)).item() for a, b in zip(gr, gc_)
        )
        del yr, yc, gr, gc_, leaves_r, leaves_c
        sec = entry["seconds"]
        if "cpu" in sec:
            entry["speedup_cpu_vs"] = {m: sec[m] / sec["cpu"] for m in sec if m != "cpu"}
        results["shapes"][name] = entry

    results["load_average_1_5_15_min"] = {"before": list(load_before), "after": list(os.getloadavg())}
    out = Path(args.out)
    if args.quick and args.out == parser.get_default("out"):
        out = out.with_name("scan_quick.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")

    info = results["machine"]
    print(f"Selective scan, forward+backward, float32, batch {batch}, {info['cpu']}, "
          f"{info['threads']} threads, torch {info['torch']} (median of {repeats})\n")
    cols = [m for m in wanted]
    print("| shape | " + " | ".join(f"{m} (s)" for m in cols) + " | cpu vs loop | cpu vs mambapy | max abs err cpu vs ref |")
    print("|---" * (len(cols) + 4) + "|")
    for name, e in results["shapes"].items():
        sec = e["seconds"]
        cells = [f"{sec[m]:.3f}" if m in sec else "n/a" for m in cols]
        sp = e.get("speedup_cpu_vs", {})
        print(f"| {name} (C={e['channels']}, L={e['L']}, K={e['K']}, N={e['N']}) | " + " | ".join(cells)
              + f" | {sp.get('loop', float('nan')):.1f}× | {sp.get('mambapy', float('nan')):.1f}× | "
              f"{e['max_abs_err_cpu_vs_reference']:.2e} |")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
