"""GPU check of the selective scan and of S²Mamba (run when a GPU machine is lent; nothing depends on it).

For each backend that runs on CUDA tensors (``reference``, ``cpu`` = the chunked pure-PyTorch path,
and ``mamba_ssm`` when the official kernel imports):

1. equivalence at both S²Mamba scan shapes (PCS: K 4, D 128, L 49; BSS: K 2, D 49, L 128; N 16):
   output and the gradients of all seven inputs against the ``reference`` backend run in float64;
2. scan time, forward only (under ``torch.inference_mode``) and forward + backward, at batch 256 and 1024;
3. S²Mamba whole-scene inference on the embedded Indian Pines cube (145×145×200, 7×7 patches, every
   pixel, batch 1024 and 4096): pixels/s and whether every backend gives the same classes;
4. S²Mamba training time per epoch (plain PyTorch loop, AdamW, batch 64, the 10 % random split's
   1,025 pixels; the CPU figure in ``benchmarks/README.md`` uses the Lightning loop on the official split).

Times are CUDA-synchronised wall clock, median of ``--repeats`` after warm-up. Writes JSON to ``--out``
(default ``benchmarks/results/gpu.json``)::

    python benchmarks/bench_gpu.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from geolesf.methods.hsi.s2mamba import S2Mamba
from geolesf.ops.selective_scan import mamba_ssm_available, selective_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scan  # noqa: E402  (the scan shapes and seeded inputs of the CPU benchmark)

ROOT = Path(__file__).resolve().parents[1]
SHAPES = bench_scan.SHAPES


def make_inputs(batch, K, Dk, L, N, device, dtype=torch.float32, seed=0):
    """``bench_scan``'s seeded scan inputs, on ``device``."""
    return [t.to(device=device, dtype=dtype) for t in bench_scan.make_inputs(batch, K, Dk, L, N, seed=seed)]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scan(backend, inputs):
    u, delta, A, B, C, D, bias = inputs
    return selective_scan(u, delta, A, B, C, D, bias, delta_softplus=True, backend=backend)


def grads(backend, inputs, weight):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = scan(backend, leaves)
    (y * weight.to(y.dtype)).sum().backward()
    return y.detach(), [t.grad for t in leaves]


def scan_section(device, backends, batches, repeats):
    out = {}
    for name, (K, Dk, L, N) in SHAPES.items():
        small = make_inputs(64, K, Dk, L, N, device)
        weight = torch.randn(64, K * Dk, L, generator=torch.Generator().manual_seed(1)).to(device)
        ref_y, ref_g = grads("reference", [t.double() for t in small], weight.double())
        entry = {"equivalence_batch": 64, "max_abs_err_vs_reference_float64": {}, "seconds": {}}
        for backend in backends:
            y, g = grads(backend, small, weight)
            entry["max_abs_err_vs_reference_float64"][backend] = {
                "y": float((y.double() - ref_y).abs().max()),
                "grads": float(max((a.double() - b).abs().max() for a, b in zip(g, ref_g))),
            }
            if backend == "cpu":  # the torch path in float64 against the reference in float64
                y64, g64 = grads(backend, [t.double() for t in small], weight.double())
                entry["max_abs_err_vs_reference_float64"]["cpu_float64"] = {
                    "y": float((y64 - ref_y).abs().max()),
                    "grads": float(max((a - b).abs().max() for a, b in zip(g64, ref_g))),
                }
        for batch in batches:
            inputs = make_inputs(batch, K, Dk, L, N, device)
            leaves = [t.clone().requires_grad_(True) for t in inputs]
            for backend in backends:
                def fwd(backend=backend):
                    with torch.inference_mode():
                        scan(backend, inputs)

                def fwd_bwd(backend=backend):
                    for t in leaves:
                        t.grad = None
                    scan(backend, leaves).sum().backward()

                entry["seconds"][f"{backend}/B{batch}"] = {
                    "forward": median_time(fwd, device, repeats),
                    "forward_backward": median_time(fwd_bwd, device, repeats),
                }
                print(f"scan {name} B{batch} {backend:>9}: fwd {entry['seconds'][f'{backend}/B{batch}']['forward'] * 1e3:8.2f} ms"
                      f"  fwd+bwd {entry['seconds'][f'{backend}/B{batch}']['forward_backward'] * 1e3:8.2f} ms", flush=True)
        out[name] = entry
    return out


def indian_pines():
    import scipy.io

    cube = scipy.io.loadmat(ROOT / "geolesf/embedded/indian_pines/IP_200_M.mat")["data_M"].astype(np.float32)
    gt = scipy.io.loadmat(ROOT / "geolesf/embedded/indian_pines/Indian_pines_gt.mat")["indian_pines_gt"]
    cube = (cube - cube.mean((0, 1))) / cube.std((0, 1))
    return cube, gt.astype(np.int64)


def patches(cube, rows, cols, size, device):
    """(N, bands, size, size) patches around (rows, cols), symmetric padding as S²Mamba."""
    r = size // 2
    padded = torch.from_numpy(np.pad(cube, ((r, r), (r, r), (0, 0)), mode="symmetric")).to(device)
    offs = torch.arange(-r, r + 1, device=device)
    rr = torch.as_tensor(rows, device=device)[:, None, None] + r + offs[None, :, None]
    cc = torch.as_tensor(cols, device=device)[:, None, None] + r + offs[None, None, :]
    return padded[rr, cc].permute(0, 3, 1, 2).contiguous()


def set_backend(model, backend):
    for m in model.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = backend


def inference_section(device, backends, batches, repeats):
    cube, _ = indian_pines()
    h, w, bands = cube.shape
    rows, cols = np.divmod(np.arange(h * w), w)
    x = patches(cube, rows, cols, 7, device)
    torch.manual_seed(0)
    model = S2Mamba(bands, 16, 7).to(device).eval()
    out, classes = {}, {}
    for backend in backends:
        set_backend(model, backend)
        for batch in batches:
            def run(batch=batch):
                preds = []
                with torch.inference_mode():
                    for s in range(0, x.shape[0], batch):
                        preds.append(model(x[s:s + batch]).argmax(1))
                return torch.cat(preds)

            n = x.shape[0]
            seconds = median_time(run, device, repeats, warmup=1)
            classes[backend] = run().cpu()
            out[f"{backend}/B{batch}"] = {"pixels": int(n), "seconds": seconds, "pixels_per_second": n / seconds}
            print(f"S²Mamba scene {backend:>9} batch {batch}: {n / seconds:12,.0f} px/s", flush=True)
    base = classes.get("cpu")
    agree = {b: float((c == base).float().mean()) for b, c in classes.items()} if base is not None else {}
    return {"scene": "Indian Pines 145×145×200 (embedded 8-bit)", "patch": 7, "runs": out,
            "class_agreement_with_cpu_backend": agree}


def training_section(device, backends, epochs):
    cube, gt = indian_pines()
    rng = np.random.default_rng(0)
    train = []
    for c in range(1, gt.max() + 1):
        idx = np.flatnonzero(gt.ravel() == c)
        if idx.size:
            train.extend(rng.choice(idx, max(1, int(round(0.1 * idx.size))), replace=False).tolist())
    train = np.array(sorted(train))
    rows, cols = np.divmod(train, gt.shape[1])
    x = patches(cube, rows, cols, 7, device)
    y = torch.as_tensor(gt.ravel()[train] - 1, device=device)
    out = {}
    for backend in backends:
        torch.manual_seed(0)
        model = S2Mamba(cube.shape[2], 16, 7).to(device).train()
        set_backend(model, backend)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=5e-3)

        def epoch():
            perm = torch.randperm(x.shape[0], device=device)
            for s in range(0, x.shape[0], 64):
                b = perm[s:s + 64]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()

        seconds = median_time(epoch, device, epochs, warmup=1)
        out[backend] = {"train_pixels": int(x.shape[0]), "batch": 64, "seconds_per_epoch": seconds}
        print(f"S²Mamba training {backend:>9}: {seconds:.3f} s/epoch ({x.shape[0]} px, batch 64)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small batches and few repeats (a smoke test)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    backends = ["reference", "cpu"] + (["mamba_ssm"] if device.type == "cuda" and mamba_ssm_available() else [])
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "backends": backends,
        "mamba_ssm": None,
    }
    if "mamba_ssm" in backends:
        import mamba_ssm

        result["mamba_ssm"] = getattr(mamba_ssm, "__version__", "unknown")
    repeats = 2 if args.quick else 10
    sections = [
        ("scan", lambda: scan_section(device, backends, [16] if args.quick else [256, 1024], repeats)),
        ("s2mamba_inference", lambda: inference_section(device, [b for b in backends if b != "reference" or device.type == "cuda"],
                                                        [256] if args.quick else [1024, 4096], 1 if args.quick else 3)),
        ("s2mamba_training", lambda: training_section(device, [b for b in backends if b != "reference"],
                                                      1 if args.quick else 3)),
    ]
    for name, fn in sections:
        try:
            result[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a section that fails is recorded, the others still run
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
