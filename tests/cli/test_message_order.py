"""Messages in the order things happen, as a user sees them with stdout and stderr in one pipe:
notes before the work's progress bar, warnings printed each time (every seed), not only stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
IP = REPO / "geolesf" / "embedded" / "indian_pines"


def _geolesf(*args: str, cwd: Path) -> list[str]:
    """Run the CLI in a fresh interpreter, stdout and stderr merged into one pipe (as in CI logs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "geolesf.cli.main", *args], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    # tqdm redraws with \r: each redraw is its own "line" here
    return [part for line in run.stdout.split("\n") for part in line.split("\r") if part.strip()]


def test_crs_note_comes_before_the_progress_bar(tmp_path):
    import scipy.io

    cube = scipy.io.loadmat(IP / "IP_200_M.mat")["data_M"][:12, :12]
    scipy.io.savemat(tmp_path / "crop.mat", {"data_M": cube})
    lines = _geolesf("predict", "crop.mat", "--model", "s2mamba", "--checkpoint", "s2mamba:indian_pines_dase",
                     "--out", "map.tif", "--batch-size", "48", cwd=tmp_path)
    note = next(i for i, ln in enumerate(lines) if ln.startswith("note:") and "has no CRS" in ln)
    bar = next(i for i, ln in enumerate(lines) if ln.startswith("predict:"))
    wrote = next(i for i, ln in enumerate(lines) if ln.startswith("wrote ") and "map.tif" in ln)
    assert note < bar < wrote


def test_split_warning_printed_for_every_seed_and_stored(tmp_path):
    lines = _geolesf("train", "--config", "baselines/indian_pines_rf",
                     "--split", "disjoint", "--seeds", "0,1", "--out", str(tmp_path / "run"),
                     "--set", "model.args.n_estimators=5", "--set", f"data.cube={IP / 'IP_200_M.mat'}:data_M",
                     "--set", f"data.labels={IP / 'Indian_pines_gt.mat'}:indian_pines_gt", cwd=tmp_path)
    printed = [ln for ln in lines if ln.startswith("warning: classes") and "have no test pixels" in ln]
    stored = []
    for seed in (0, 1):
        split = json.loads((tmp_path / "run" / f"seed_{seed}" / "metrics.json").read_text())["split"]
        stored.append([w for w in split["params"]["warnings"] if "no test pixels" in w])
    assert all(stored), "the disjoint split of Indian Pines leaves a class without test pixels"
    assert len(printed) == 2  # once per seed, not once per session
    for text, st in zip(printed, stored):
        ids = sorted(int(w.split()[1]) for w in st)
        assert f"classes {ids} have no test pixels" in text
    first_summary = next(i for i, ln in enumerate(lines) if ln.startswith("[rf]") and "split disjoint" in ln)
    assert lines.index(printed[0]) < first_summary  # before the work, not after it
