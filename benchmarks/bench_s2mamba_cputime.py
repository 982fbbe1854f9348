"""S²Mamba CPU time per inference batch and per training step, this tree vs earlier revisions, interleaved.

On a shared machine wall time measures the other users as much as the code. This benchmark
measures the *thread CPU time* (``time.thread_time``) of one thread (``torch.set_num_threads(1)``,
so no spinning helper threads are counted) for

* an inference forward of 256 random patches (200 bands, 7×7, eval, ``torch.inference_mode``),
* a training step of 64 patches (forward, cross-entropy, backward, AdamW; dropout 0.4),

best of 5 each, in a fresh subprocess per revision (the revision's tree extracted with
``git archive`` and put first on ``PYTHONPATH``), the revisions taken in turn over ``--rounds``
rounds so that a change in the machine's load hits all of them alike. Ratios are of the best
figure per revision. Writes ``benchmarks/results/s2mamba_cputime.json``.

    python benchmarks/bench_s2mamba_cputime.py [--baseline 397d1a4 --baseline e0ff654] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "s2mamba_cputime.json"

PROBE = """
import json, time, torch
from geolesf.methods.hsi.s2mamba import S2Mamba
torch.set_num_threads(1)
torch.manual_seed(0)
m = S2Mamba(200, 16, 7, dropout=0.4).eval()
x = torch.randn(256, 200, 7, 7)
with torch.inference_mode():
    m(x)
    inf = []
    for _ in range(5):
        t = time.thread_time(); m(x); inf.append(time.thread_time() - t)
m.train()
opt = torch.optim.AdamW(m.parameters(), 5e-4)
xb, yb = torch.randn(64, 200, 7, 7), torch.randint(0, 16, (64,))
tr = []
for i in range(6):
    t = time.thread_time()
    loss = torch.nn.functional.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
    if i:
        tr.append(time.thread_time() - t)
print(json.dumps({"infer_256_cpu_s": min(inf), "train_step_64_cpu_s": min(tr)}))
"""


def probe(tree: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", action="append", default=[], metavar="REV")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    revs = args.baseline or ["397d1a4", "e0ff654"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        for rev in revs:
            trees[rev] = Path(tmp, rev)
            trees[rev].mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(trees[rev])], input=archive, check=True)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                got = probe(tree)
                prev = best.setdefault(name, got)
                best[name] = {k: min(v, prev[k]) for k, v in got.items()}
                print(f"{name:>10}: inference {got['infer_256_cpu_s'] * 1e3:.0f} ms / 256 px, "
                      f"training step {got['train_step_64_cpu_s'] * 1e3:.0f} ms / 64 px")
    new = best["this tree"]
    result = {"best": best, "speedup": {rev: {k: best[rev][k] / new[k] for k in new} for rev in revs},
              "inference_pixels_per_cpu_second": 256 / new["infer_256_cpu_s"],
              "load_average_1_5_15_min": {"before": list(load_before), "after": list(os.getloadavg())}}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import machine_info

    result["machine"] = machine_info()
    for rev, sp in result["speedup"].items():
        print(f"vs {rev}: inference {sp['infer_256_cpu_s']:.2f}x, training step {sp['train_step_64_cpu_s']:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
