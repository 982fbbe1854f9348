"""`geolesf --help` start-up time as a ratio of `python -c "import torch"`.

The CLI must not import torch to print its help: the target is a ratio <= 0.3.
Both sides are measured in the same run as the median of several fresh subprocesses.

    python benchmarks/bench_cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cli_startup.json"


def time_command(cmd: list[str], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    # One warm-up each so that both sides read from a warm page cache.
    time_command([py, "-c", "import torch"], 1)
    time_command([py, "-m", "geolesf.cli.main", "--help"], 1)
    torch_s = time_command([py, "-c", "import torch"], args.repeats)
    help_s = time_command([py, "-m", "geolesf.cli.main", "--help"], args.repeats)
    result = {
        "geolesf_help_s": round(help_s, 4),
        "import_torch_s": round(torch_s, 4),
        "ratio": round(help_s / torch_s, 3),
        "target_ratio_max": 0.3,
        "repeats": args.repeats,
        "machine": machine_info(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| command | median s |\n|---|---|")
    print(f"| geolesf --help | {help_s:.3f} |\n| python -c 'import torch' | {torch_s:.3f} |")
    print(f"ratio {result['ratio']} (target <= 0.3)")


if __name__ == "__main__":
    main()
