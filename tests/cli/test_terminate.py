"""SIGTERM stops geolesf as Ctrl-C does: one ``error: interrupted`` line, status 130, no partial output.

A process manager (the QGIS provider cancelling a run, ``timeout``, a batch system) sends SIGTERM; its
default action would end the process before :mod:`geolesf.io.atomic` and the streaming predictor remove
their temporary files. The run is a real ``geolesf predict`` of a 40×40 Indian Pines crop (GeoTIFF) with
the shipped S²Mamba checkpoint, terminated once its temporary class map exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from geolesf.cli.main import _terminate_as_interrupt
from tests import scenes

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_mid_prediction_leaves_nothing(tmp_path):
    scene = scenes.write_scene(tmp_path / "scene.tif", slice(40, 80), slice(8, 48))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "geolesf", "predict", str(scene), "--checkpoint",
                             "s2mamba:indian_pines_dase", "--out", str(out / "map.tif")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        seen |= {p.name for p in out.iterdir()}
        if ".map.tif.partial.tif" in seen:
            break
        time.sleep(0.02)
    assert ".map.tif.partial.tif" in seen and proc.poll() is None, "the prediction ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == "error: interrupted"
    assert sorted(p.name for p in out.iterdir()) == []


def test_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with _terminate_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
            raise AssertionError("SIGTERM did not interrupt")
        except KeyboardInterrupt:
            pass
    assert signal.getsignal(signal.SIGTERM) is before
