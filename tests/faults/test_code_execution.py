"""Issue 18, code execution from files: a checkpoint, a proposal pickle or a cached kernel library
that a user or config names must never run code.

Every payload here creates a marker file when it is unpickled or loaded; each test asserts the
marker never appears (and, where the CLI is involved, exit 2 with one ``error:`` line).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import pathlib
import pickle
import platform
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import scipy.io
import torch

from geolesf.errors import ConfigError, DataError
from tests.faults.conftest import geolesf


class _Touch:
    """Unpickling this calls ``pathlib.Path.touch(marker)``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class _System:
    """Unpickling this calls ``os.system('touch MARKER')``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _evil_ckpt(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    """A Lightning-looking checkpoint whose unpickling (weights_only=False) touches ``marker``."""
    torch.save({"state_dict": {}, "epoch": 1, "global_step": 1, "pytorch-lightning_version": "2.6.0",
                "payload": _Touch(marker)}, path)
    return path


def _tiny_scene(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 255, (12, 12, 6)).astype(np.uint8)
    gt = np.zeros((12, 12), np.uint8)
    gt[:6] = 1
    gt[6:] = 2
    scipy.io.savemat(folder / "cube.mat", {"X": cube})
    scipy.io.savemat(folder / "gt.mat", {"gt": gt})
    return folder / "cube.mat", folder / "gt.mat"


def _train_args(tmp_path: pathlib.Path, resume: str) -> list[str]:
    cube, gt = _tiny_scene(tmp_path)
    return ["--offline", "train", "--model", "s2mamba", "--cube", cube, "--labels", gt, "--split", "random",
            "--train-fraction", "0.5", "--epochs", "1", "--out", tmp_path / "run",
            "--set", f"trainer.resume={resume}"]


class _Server:
    """A loopback HTTP server (127.0.0.1, ephemeral port) serving one file and logging every request."""

    def __init__(self, payload: bytes) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# trainer.resume


@pytest.mark.parametrize("offline", [True, False])
def test_resume_from_url_is_refused_before_any_request(tmp_path, offline):
    marker = tmp_path / "MARKER"
    evil = _evil_ckpt(tmp_path / "evil.ckpt", marker)
    with _Server(evil.read_bytes()) as server:
        args = _train_args(tmp_path, f"http://127.0.0.1:{server.port}/evil.ckpt")
        if not offline:
            args.remove("--offline")
        run = geolesf(*args, timeout=300)
    run.assert_user_error("trainer.resume", "not a local file")
    assert server.requests == []
    assert not marker.exists()


def test_resume_from_local_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    evil = _evil_ckpt(tmp_path / "evil.ckpt", marker)
    run = geolesf(*_train_args(tmp_path, str(evil)), timeout=300)
    run.assert_user_error("trainer.resume", "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("value", ["https://example.invalid/x.ckpt", "s3://bucket/x.ckpt", "file:///tmp/x.ckpt",
                                   "simplecache::http://127.0.0.1:1/x.ckpt"])
def test_resume_checkpoint_refuses_remote_paths(value):
    from geolesf.methods.hsi.patch_training import resume_checkpoint

    with pytest.raises(ConfigError, match=r"^trainer\.resume: .* not a local file"):
        resume_checkpoint(value)


def test_resume_checkpoint_accepts_a_weights_only_lightning_file(tmp_path):
    from geolesf.methods.hsi.patch_training import resume_checkpoint

    ok = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3, "loops": {"fit_loop": {"x": 1}}}, ok)
    assert resume_checkpoint(str(ok)) == ok.resolve()
    assert resume_checkpoint(None) is None
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        resume_checkpoint(str(tmp_path / "missing.ckpt"))


def test_torch_floor_defaults_to_weights_only():
    text = (pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith('"torch>='))
    floor = tuple(int(p) for p in line.split(">=")[1].split(",")[0].strip('"').split(".")[:2])
    assert floor >= (2, 6), line


# ---------------------------------------------------------------------------------------------
# WSOD proposals


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("payload", [_Touch, _System])
def test_proposal_pickle_payload_never_runs(tmp_path, protocol, payload):
    from geolesf.methods.wsod.proposals import ProposalProvider, load_proposal_file

    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pkl"
    # hidden inside an otherwise well-formed Detectron proposal dict
    evil.write_bytes(pickle.dumps({"boxes": [np.zeros((1, 4)), payload(marker)], "indexes": [1, 2]},
                                  protocol=protocol))
    with pytest.raises(DataError, match="not a readable proposal pickle"):
        load_proposal_file(evil)
    top = tmp_path / "top.pkl"
    top.write_bytes(pickle.dumps(payload(marker), protocol=protocol))
    with pytest.raises(DataError, match="refusing to load"):
        ProposalProvider(str(top))
    assert not marker.exists()


def test_official_style_pickle_of_numpy_arrays_still_loads(tmp_path):
    from geolesf.methods.wsod.proposals import load_proposal_file

    boxes = [np.array([[0, 0, 9, 9], [2, 3, 20, 30]], np.uint16), np.zeros((0, 4), np.float32)]
    data = {"boxes": boxes, "indexes": np.array([5, 6], np.int64), "scores": [np.ones(2), np.ones(0)]}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"ss{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        got = load_proposal_file(path)
        assert list(got) == ["5", "6"]
        np.testing.assert_array_equal(got["5"], boxes[0].astype(np.float32))
        assert got["6"].shape == (0, 4)


def test_npz_json_and_mat_proposals_load(tmp_path):
    from geolesf.methods.wsod.proposals import load_proposal_file

    a = np.array([[0, 0, 9, 9], [2, 3, 20, 30]], np.float32)
    np.savez(tmp_path / "p.npz", img1=a, img2=a[:1])
    got = load_proposal_file(tmp_path / "p.npz")
    assert sorted(got) == ["img1", "img2"] and np.array_equal(got["img1"], a)

    (tmp_path / "p.json").write_text('{"img1": [[0, 0, 9, 9], [2, 3, 20, 30]], "img2": []}')
    got = load_proposal_file(tmp_path / "p.json")
    assert np.array_equal(got["img1"], a) and got["img2"].shape == (0, 4)
    (tmp_path / "d.json").write_text('{"boxes": [[[0, 0, 9, 9]]], "ids": ["x"]}')
    assert np.array_equal(load_proposal_file(tmp_path / "d.json")["x"], a[:1])

    cell = np.empty((1,), dtype=object)
    cell[0] = np.array([[1, 1, 10, 10]], np.float64)  # 1-based y1 x1 y2 x2
    scipy.io.savemat(tmp_path / "p.mat", {"images": np.array(["im"], dtype=object), "boxes": cell})
    assert np.array_equal(load_proposal_file(tmp_path / "p.mat")["im"], np.array([[0, 0, 9, 9]], np.float32))


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    from geolesf.methods.wsod.proposals import load_proposal_file

    marker = tmp_path / "MARKER"
    obj = np.empty((1,), dtype=object)
    obj[0] = _Touch(marker)
    np.savez(tmp_path / "evil.npz", img=obj)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_proposal_file(tmp_path / "evil.npz")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# native kernel cache

_EVIL_C = textwrap.dedent("""\
    #include <stdio.h>
    __attribute__((constructor)) static void geolesf_evil(void) {
        FILE *f = fopen(MARKER, "w");
        if (f) fclose(f);
    }
    int gl_scan_infer_f32(void) { return 0; }
""")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _expected_names() -> list[str]:
    """The cache file names the kernel loader looks for, as it computes them."""
    from geolesf.ops.selective_scan import native

    source = native._kernel_source_bytes()
    names = []
    for flags in native._build_flag_sets():
        parts = [source] + [s.encode() for s in (_compiler(), *flags, platform.machine(), native._cpu_id())]
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:24]
        names.append(f"selective_scan_{key}.so")
    return names


def _plant(folder: pathlib.Path, marker: pathlib.Path, *, sidecar: bool) -> None:
    """The evil library under every expected name (with a matching .sha256 sidecar if asked)."""
    src = folder / "evil.c"
    src.write_text(_EVIL_C)
    lib = folder / "evil.so.tmp"
    subprocess.run([_compiler(), "-shared", "-fPIC", f'-DMARKER="{marker}"', str(src), "-o", str(lib)],
                   check=True, capture_output=True, timeout=120)
    digest = hashlib.sha256(lib.read_bytes()).hexdigest()
    for name in _expected_names():
        shutil.copy(lib, folder / name)
        if sidecar:
            (folder / (name + ".sha256")).write_text(digest + "\n")
    lib.unlink()
    src.unlink()


def _load_kernel(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = ("import warnings; warnings.simplefilter('always');"
            "from geolesf.ops.selective_scan.native import native_kernel_available as a; print('native', a())")
    full = {k: v for k, v in os.environ.items() if k not in ("GEOLESF_KERNEL_CACHE", "GEOLESF_SCAN_NATIVE")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**full, **env})


needs_cc = pytest.mark.skipif(_compiler() is None or sys.platform.startswith("win"), reason="no C compiler")


@needs_cc
def test_world_writable_kernel_cache_is_not_loaded(tmp_path):
    marker = tmp_path / "MARKER"
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    _plant(cache, marker, sidecar=True)  # even with a matching sidecar: anyone could have written both
    cache.chmod(0o777)
    proc = _load_kernel({"GEOLESF_KERNEL_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert "native True" in proc.stdout  # built in a private temp folder instead
    assert "writable by group or others" in proc.stderr
    assert not marker.exists()


@needs_cc
def test_symlinked_kernel_cache_is_not_followed(tmp_path):
    marker = tmp_path / "MARKER"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    target = tmp_path / "planted"
    target.mkdir(mode=0o700)
    _plant(target, marker, sidecar=True)
    uid = os.getuid()
    (tmpdir / f"geolesf-kernels-{uid}").symlink_to(target)  # the default cache, planted as a symlink
    proc = _load_kernel({"TMPDIR": str(tmpdir)})
    assert proc.returncode == 0, proc.stderr
    assert "native True" in proc.stdout and "is a symlink" in proc.stderr
    assert not marker.exists()
    # GEOLESF_KERNEL_CACHE naming a symlink is refused the same way
    proc = _load_kernel({"GEOLESF_KERNEL_CACHE": str(tmpdir / f"geolesf-kernels-{uid}")})
    assert "native True" in proc.stdout and "is a symlink" in proc.stderr
    assert not marker.exists()


@needs_cc
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_kernel_cache_of_another_user_is_not_loaded(tmp_path):
    marker = tmp_path / "MARKER"
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o755)
    _plant(cache, marker, sidecar=True)
    os.chown(cache, 65534, 65534)
    proc = _load_kernel({"GEOLESF_KERNEL_CACHE": str(cache)})
    assert "native True" in proc.stdout and "owned by uid 65534" in proc.stderr
    assert not marker.exists()


@needs_cc
@pytest.mark.parametrize("sidecar", [False, True])
def test_unverified_library_in_trusted_cache_is_rebuilt(tmp_path, sidecar):
    """A private cache holding a library without a sidecar, or with a stale one, rebuilds it."""
    marker = tmp_path / "MARKER"
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    _plant(cache, marker, sidecar=False)
    if sidecar:
        for name in _expected_names():
            (cache / (name + ".sha256")).write_text("0" * 64 + "\n")
    proc = _load_kernel({"GEOLESF_KERNEL_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert "native True" in proc.stdout and "RuntimeWarning" not in proc.stderr
    assert not marker.exists()
    name = _expected_names()[0]
    recorded = (cache / (name + ".sha256")).read_text().strip()
    assert recorded == hashlib.sha256((cache / name).read_bytes()).hexdigest()


@pytest.mark.shared_data("voc_samples")
def test_train_with_a_pickle_payload_as_proposals_is_refused(shared_data, tmp_path):
    """The issue's reproduction through the CLI: ``geolesf train`` with ``data.proposals=evil.pkl``."""
    import yaml

    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"000001": _System(marker)}, protocol=2))
    cfg = {
        "task": "wsod", "out": str(tmp_path / "run"),
        "model": {"name": "ndi-wsod", "args": {"backbone": "tiny", "width": 16, "hidden": 32}},
        "data": {"dataset": "voc2007", "root": str(shared_data / "voc_samples" / "mmdet_VOCdevkit"), "split": None,
                 "proposals": str(evil), "scales": [160]},
        "trainer": {"iterations": 1, "iter_size": 1, "lr_steps": [1], "accelerator": "cpu", "evaluate": False},
    }
    (tmp_path / "wsod.yaml").write_text(yaml.safe_dump(cfg))
    r = geolesf("train", "--config", tmp_path / "wsod.yaml")
    r.assert_user_error(str(evil))
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# saved rf/svm models: the estimator is a skops file inside model.pt; skops rebuilds objects by name


def _skops_system(marker: pathlib.Path) -> bytes:
    """A skops file whose root node calls ``os.system('touch MARKER')`` when constructed."""
    import io
    import json
    import zipfile

    import skops.io as sio

    args = json.loads(zipfile.ZipFile(io.BytesIO(sio.dumps((f"touch '{marker}'",)))).read("schema.json"))
    schema = {"__class__": "system", "__module__": "os", "__loader__": "ConstructorFromReduceNode",
              "__id__": 1, "content": {k: v for k, v in args.items() if k not in ("protocol", "_skops_version")},
              "protocol": args["protocol"], "_skops_version": args["_skops_version"]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", json.dumps(schema))
    return buf.getvalue()


def test_spectrum_checkpoint_with_a_code_running_estimator_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    from geolesf.errors import ModelError
    from geolesf.methods.hsi import spectrum

    live = tmp_path / "LIVE"
    sio.loads(_skops_system(live), trusted=["os.system"])  # the payload does run code when trusted
    assert live.exists()

    marker = tmp_path / "MARKER"
    forest = RandomForestClassifier(3, random_state=0).fit(np.random.default_rng(0).random((20, 4)), [0, 1] * 10)
    ckpt = spectrum.SpectrumCheckpoint(estimator=forest, model_name="rf", model_args={}, band_mean=None,
                                       band_std=None, pca=None, class_ids=[1, 2], class_names=["a", "b"],
                                       colors=[[0, 0, 0], [9, 9, 9]], in_chans=4)
    spectrum.save(tmp_path / "model.pt", ckpt)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["estimator"] = torch.frombuffer(bytearray(_skops_system(marker)), dtype=torch.uint8)
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match=r"evil\.pt: the stored estimator names type 'os\.system'"):
        spectrum.load(tmp_path / "evil.pt")
    scene = tmp_path / "scene.tif"
    import rasterio

    with rasterio.open(scene, "w", driver="GTiff", width=8, height=8, count=4, dtype="float32") as dst:
        dst.write(np.ones((4, 8, 8), np.float32))
    geolesf("predict", scene, "--checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "map.tif",
            timeout=300).assert_user_error("evil.pt", "os.system")
    assert not marker.exists() and not (tmp_path / "map.tif").exists()
