"""The notebooks in ``notebooks/`` run green (small settings) and are stored without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Shared (not redistributable) data a notebook reads; the others run on the shipped data.
NOTEBOOK_DATA = {"03_sam_peft_aerial": ("rs_seg_tiles",), "04_weak_supervision_tags": ("rs_seg_tiles", "voc_samples")}
RUNS = [pytest.param(p, id=p.stem, marks=[pytest.mark.shared_data(*NOTEBOOK_DATA[p.stem])] if p.stem in NOTEBOOK_DATA else [])
        for p in NOTEBOOKS]


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    for name in ("01_indian_pines_s2mamba.ipynb", "02_tiled_prediction_qgis.ipynb", "03_sam_peft_aerial.ipynb",
                 "04_weak_supervision_tags.ipynb", "05_own_scene_polygons.ipynb",
                 "06_points_to_map.ipynb"):
        assert name in names, name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_are_stripped(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), \
        f"{path.name} needs a cell tagged 'parameters' (small settings via GEOLESF_NOTEBOOK_FAST)"


@pytest.mark.parametrize("path", RUNS)
def test_notebook_runs(path, shared_data, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("GEOLESF_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("GEOLESF_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("GEOLESF_DATA", str(shared_data))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert figures, f"{path.name} drew no figure"
    assert any(tmp_path.iterdir()), f"{path.name} wrote nothing under GEOLESF_NOTEBOOK_OUT"
    print(f"{path.name}: {seconds:.1f} s")
