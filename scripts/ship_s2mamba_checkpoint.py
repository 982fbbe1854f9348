"""Copy a geolesf-trained S²Mamba run into the package as a registered pretrained checkpoint.

    python scripts/ship_s2mamba_checkpoint.py runs/bench/s2m_dase100 indian_pines_dase \
        "geolesf train --config configs/s2mamba/indian_pines_dase.yaml --epochs 100"

Adds the run's resolved config (so ``geolesf evaluate --checkpoint s2mamba:TAG`` can rebuild the
split) and the training command (third argument) to the checkpoint's ``extra``, writes it to
``geolesf/embedded/weights/s2mamba_<TAG>.pt`` and prints the sha256 and metrics to record in
``geolesf/models/s2mamba.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from geolesf.registry import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def main(run: str, tag: str, command: str) -> None:
    run_dir = Path(run)
    payload = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["trainer"]["resume"] = None
    cfg["trainer"]["num_threads"] = None
    cfg["out"] = f"runs/s2mamba_{tag}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    payload["extra"]["config"] = cfg
    payload["extra"]["trained_with"] = command
    payload["extra"]["metrics"] = {k: round(float(metrics[k]), 4) for k in ("OA", "AA", "kappa")}
    out = ROOT / "geolesf" / "embedded" / "weights" / f"s2mamba_{tag}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = write_checkpoint(out, payload)
    print(json.dumps({"file": out.name, "bytes": out.stat().st_size, "sha256": digest,
                      "metrics": payload["extra"]["metrics"], "class_names": payload["class_names"]}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:4])
