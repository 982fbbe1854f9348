"""Generate ``docs/models.md``, the model zoo, from the registry and ``benchmarks/results/*.json``.

    python scripts/gen_model_zoo.py            # rewrite docs/models.md
    python scripts/gen_model_zoo.py --check    # exit 1 when docs/models.md is out of date

Sources, nothing typed by hand:

* shipped weights: every :class:`geolesf.registry.PretrainedCfg` of every registered model — tag,
  bands, classes, metrics, licence, sha256, the command that trained it; the parameter count is
  read from the checkpoint file when it is available locally (never downloaded here);
* speed: the benchmark JSON named for the model in :data:`SPEED` (whole-scene CPU throughput with
  the machine it was measured on);
* measured accuracy: ``benchmarks/results/<model>_accuracy.json`` and ``baselines.json`` runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "models.md"
RESULTS = ROOT / "benchmarks" / "results"
# model name → (results file, key path to pixels/s, what was timed)
SPEED = {"s2mamba": ("s2mamba.json", ("scene", "cpu", "pixels_per_second"), "whole-scene CPU, px/s")}


def _dig(d: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _machine(m: dict[str, Any] | None) -> str:
    if not m:
        return "machine not recorded"
    threads = m.get("threads", m.get("torch_threads"))
    return f"{m.get('cpu', '?')}, {threads} threads, torch {m.get('torch', '?')}"


def _params(cfg: Any) -> str:
    import torch

    from geolesf.registry import resolve_weights

    try:
        path = resolve_weights(cfg)
    except Exception:  # noqa: BLE001 - weights not available locally: the table says so
        return "—"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else {}
    n = sum(int(v.numel()) for v in state.values() if hasattr(v, "numel"))
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def _speed(name: str) -> tuple[str, str]:
    if name not in SPEED:
        return "—", ""
    file, keys, what = SPEED[name]
    path = RESULTS / file
    if not path.is_file():
        return "—", ""
    d = json.loads(path.read_text())
    value = _dig(d, keys)
    if value is None:
        return "—", ""
    return f"{value:,.0f} px/s", f"{what} (`benchmarks/results/{file}`; {_machine(d.get('machine'))})"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("—" if v is None else str(v))


def shipped_table() -> list[str]:
    from geolesf.registry import get_entry, list_models

    rows, notes = [], []
    for name in list_models():
        entry = get_entry(name)
        for tag, cfg in entry.pretrained.items():
            speed, note = _speed(name)
            if note:
                notes.append(f"- {name}: {note}")
            m = cfg.metrics
            rows.append(
                f"| `{name}:{tag}` | {entry.method} / {entry.kind} | {cfg.bands or '—'} | {len(cfg.class_names) or '—'} | "
                f"{_fmt(m.get('OA'))} | {_fmt(m.get('AA'))} | {_fmt(m.get('kappa'))} | {_params(cfg)} | {speed} | "
                f"`{cfg.sha256}` |")
            notes.append(f"- `{name}:{tag}` — {cfg.description.rstrip('.')}. Licence: {cfg.licence.rstrip('.')}."
                         + (f" Trained with `{cfg.trained_with}`." if cfg.trained_with else ""))
    head = ["| weights | method / kind | bands | classes | OA | AA | κ | params | speed | sha256 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    if not rows:
        return ["No shipped weights are registered."]
    return head + rows + [""] + notes


def measured_tables() -> list[str]:
    out: list[str] = []
    for path in sorted(RESULTS.glob("*_accuracy.json")):
        d = json.loads(path.read_text())
        out += [f"### {d.get('model', path.stem)} (`benchmarks/results/{path.name}`)", "",
                "| run | split | train px | test px | OA | AA | κ | epochs | leakage |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in d.get("runs", []):
            out.append(f"| {r.get('run')} | {r.get('split')} | {r.get('train_pixels')} | {r.get('test_pixels')} | "
                       f"{_fmt(r.get('OA'))} | {_fmt(r.get('AA'))} | {_fmt(r.get('kappa'))} | {r.get('epochs')} | "
                       f"{_fmt(r.get('leakage_fraction'))} |")
        out.append("")
    base = RESULTS / "baselines.json"
    if base.is_file():
        d = json.loads(base.read_text())
        out += [f"### Baselines (`benchmarks/results/baselines.json`; {_machine(d.get('machine'))})", "",
                "| model | split | train px | test px | OA | AA | κ | fit s |", "|---|---|---|---|---|---|---|---|"]
        for r in d.get("results", []):
            out.append(f"| {r.get('model')} | {r.get('split')} | {r.get('train_pixels')} | {r.get('test_pixels')} | "
                       f"{_fmt(r.get('OA'))} | {_fmt(r.get('AA'))} | {_fmt(r.get('kappa'))} | {r.get('fit_seconds')} |")
        out.append("")
    return out


def render() -> str:
    sys.path.insert(0, str(ROOT))
    lines = [
        "# Model zoo", "",
        "<!-- Generated by scripts/gen_model_zoo.py from the model registry and benchmarks/results; "
        "do not edit by hand. -->", "",
        "Shipped weights are registered with their sha256 and verified on every load; use them as "
        "`--checkpoint MODEL:TAG` (e.g. `geolesf predict cube.mat --checkpoint s2mamba:indian_pines_dase`). "
        "Metrics are on the test pixels of the split the weights were trained for.", "",
        "## Shipped weights", "", *shipped_table(), "",
        "## Measured runs", "",
        "Every number below was measured by the benchmark scripts in `benchmarks/` on the embedded 8-bit "
        "Indian Pines cube. *Leakage* is the share of test pixels whose 7×7 patch contains a training pixel.", "",
        *measured_tables(),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _generated_page import generate

    return generate(TARGET, render, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
