"""The provider's runner (plain Python, no QGIS): progress parsing, messages, cleanup, a real geolesf run.

``geolesf_qgis/runner.py`` is what every algorithm of the QGIS plugin calls; these checks need no PyQGIS.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time

import pytest
from tqdm import tqdm

from geolesf.qgis_plugin.geolesf_qgis import runner
from tests.qgis_provider.executable import ROOT, wrapper


class Feedback:
    """The QgsProcessingFeedback methods the runner calls, recorded."""

    def __init__(self, cancel_after: float | None = None):
        self.calls: list[tuple[str, object]] = []
        self.cancel_at = None if cancel_after is None else time.monotonic() + cancel_after

    def __getattr__(self, name):
        return lambda value: self.calls.append((name, value))

    def isCanceled(self):  # noqa: N802
        return self.cancel_at is not None and time.monotonic() > self.cancel_at

    def of(self, name):
        return [v for n, v in self.calls if n == name]


def test_progress_of_real_tqdm_redraws():
    stream = io.StringIO()
    for _ in tqdm(range(4), desc="predict scene.tif", unit="tile", file=stream, mininterval=0, miniters=1):
        pass
    parsed = [runner.parse_progress(s) for s in re.split(r"[\r\n]", stream.getvalue()) if s.strip()]
    assert [p for p in parsed if p] and all(parsed)
    assert {desc for desc, _ in parsed} == {"predict scene.tif"}
    assert [pct for _, pct in parsed][0] == 0 and [pct for _, pct in parsed][-1] == 100
    assert {25, 50, 75} <= {pct for _, pct in parsed}
    assert runner.parse_progress("wrote map.tif (40×40 px, 1/1 tiles run)") is None
    assert runner.parse_progress("\x1b[A 42%|████      | 5/12 [00:01<00:02]") == ("", 42)


def test_error_message():
    result = runner.RunResult(2, stderr=["warning: x", "error: scene.tif has 3 bands; model s2mamba expects 200"])
    assert runner.error_message(result) == "error: scene.tif has 3 bands; model s2mamba expects 200"
    crash = runner.RunResult(1, stderr=["Traceback (most recent call last):", "ValueError: boom"])
    assert runner.error_message(crash) == "geolesf exited with status 1: ValueError: boom"


def test_executable_and_environment(tmp_path):
    with pytest.raises(runner.GeolesfRunError, match="geolesf executable 'no-such-geolesf' not found"):
        runner.resolve_executable("no-such-geolesf")
    assert runner.resolve_executable(sys.executable) == sys.executable
    env = runner.child_environment({"PYTHONPATH": "/qgis/python", "PYTHONHOME": "/qgis", "HOME": "/h"})
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env and env["HOME"] == "/h"


def test_remove_outputs_takes_only_what_the_run_wrote(tmp_path):
    old = tmp_path / "old.tif"
    old.write_text("kept")
    os.utime(old, (time.time() - 3600,) * 2)
    new, folder, kept_folder = tmp_path / "map.tif", tmp_path / "run", tmp_path / "existing"
    kept_folder.mkdir()
    existed = runner._snapshot([old, new, new.with_suffix(".qml"), folder, kept_folder])
    since = time.time() - 1.0
    new.write_text("half")
    (tmp_path / ".map.tif.x1y2.tmp").write_text("temp")
    (tmp_path / ".other.tif.tmp").write_text("not ours")
    folder.mkdir()
    (folder / "model.pt").write_text("w")
    (kept_folder / "metrics.json").write_text("{}")
    runner.remove_outputs(existed, since)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tif.tmp", "existing", "old.tif"]
    assert list(kept_folder.iterdir()) == []


def test_a_real_run_relays_lines_and_errors(tmp_path):
    exe = str(wrapper(tmp_path))
    fb = Feedback()
    out = tmp_path / "plugin.zip"
    result = runner.run(["qgis-plugin", "--out", str(out)], fb, executable=exe, outputs=[out])
    assert result.returncode == 0 and out.is_file()
    assert fb.of("pushInfo")[0].startswith(f"wrote {out}")
    assert fb.of("pushCommandInfo") == [f"{exe} qgis-plugin --out {out}"]
    bad = ROOT / "geolesf" / "embedded" / "landsat7" / "RGB.byte.tif"
    with pytest.raises(runner.GeolesfRunError) as err:
        runner.run(["predict", str(bad), "--checkpoint", "s2mamba:indian_pines_dase", "--out",
                    str(tmp_path / "m" / "map.tif")], Feedback(), executable=exe, outputs=[tmp_path / "m" / "map.tif"])
    assert str(err.value) == "error: RGB.byte.tif has 3 bands; model s2mamba expects 200"
    assert not (tmp_path / "m").exists()
