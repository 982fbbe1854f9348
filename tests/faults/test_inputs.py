"""Hostile and broken inputs (issue 18, families 4–7): each ends in one ``error:`` line and exit 2, with the
input unchanged and no partial output; NaN/±Inf pixels are nodata on every prediction path."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geolesf.errors import DataError
from tests.faults.conftest import Run, digest, geolesf

# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def scene(shared_data: Path, work: Path) -> Path:
    """A 96×80 uncompressed, striped crop of the real Landsat 7 scene (uint8, georeferenced)."""
    from rasterio.windows import Window

    src_path = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    assert src_path.is_file(), f"{src_path} missing from GEOLESF_DATA"
    out = work / "scene.tif"
    with rasterio.open(src_path) as src:
        win = Window(300, 200, 80, 96)
        data = src.read(window=win)
        profile = {"driver": "GTiff", "height": 96, "width": 80, "count": 3, "dtype": "uint8",
                   "crs": src.crs, "transform": src.window_transform(win)}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@pytest.fixture(scope="module")
def checkpoint(work: Path) -> Path:
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint
    from geolesf.methods.unet.checkpoint import save as save_segmentation_checkpoint
    from geolesf.methods.unet.model import unet

    torch.manual_seed(5)
    net = unet(in_chans=3, num_classes=2, base=4, depth=2)
    ck = work / "model.pt"
    save_segmentation_checkpoint(ck, SegmentationCheckpoint(
        model=net, model_name="unet", model_args={"in_chans": 3, "num_classes": 2, "base": 4, "depth": 2},
        band_mean=np.array([50.0, 60.0, 70.0]), band_std=np.array([40.0, 40.0, 40.0]), class_ids=[1, 2],
        class_names=["water", "land"], colors=["#0000ff", "#00aa00"]))
    return ck


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _parse_error(run: Run, *fragments: str) -> str:
    """An argparse refusal: exit 2, one ``error:`` line (argparse prefixes it with the program), no traceback."""
    assert run.code == 2, f"exit {run.code}\n{run.err[-2000:]}"
    assert "Traceback" not in run.err, run.err[-2000:]
    errors = [ln for ln in run.err.splitlines() if "error: " in ln]
    assert len(errors) == 1, run.err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------------------------
# family 4: NaN/±Inf pixels are nodata, identically on the file, xarray and whole-cube paths


def _nan_scene(src: Path, out: Path) -> tuple[Path, np.ndarray]:
    with rasterio.open(src) as ds:
        data = ds.read().astype(np.float32)
        profile = ds.profile | {"dtype": "float32"}
    profile.pop("nodata", None)
    rng = np.random.default_rng(0)
    bad = np.zeros(data.shape[1:], bool)
    rows, cols = rng.integers(0, data.shape[1], 60), rng.integers(0, data.shape[2], 60)
    for k, (r, c) in enumerate(zip(rows, cols)):
        data[k % 3, r, c] = (np.nan, np.inf, -np.inf)[k % 3]  # one band is enough to make a pixel nodata
        bad[r, c] = True
    data[:, 10:14, 20:30] = np.nan  # a whole block
    bad[10:14, 20:30] = True
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out, bad


def test_nan_inf_pixels_are_nodata_on_file_and_xarray_paths(scene, tmp_path):
    import rioxarray

    import geolesf  # noqa: F401 (registers the accessor)
    from geolesf.methods.unet.model import unet
    from geolesf.predict.model import as_predict_model
    from geolesf.predict.tiled import predict_raster

    path, bad = _nan_scene(scene, tmp_path / "nan.tif")
    torch.manual_seed(0)
    pm = as_predict_model(unet(in_chans=3, num_classes=4, base=4, depth=2).eval(),
                          class_names=["a", "b", "c", "d"])
    kw = {"tile": 32, "overlap": 8}
    with pytest.warns(UserWarning, match="NaN/±Inf pixels are treated as nodata"):
        ref = predict_raster(path, pm, tmp_path / "ref.tif", progress=False, **kw)
    with rasterio.open(ref.out) as ds:
        file_ids, nodata = ds.read(1), ds.nodata
    assert nodata is not None
    da = rioxarray.open_rasterio(path)
    with pytest.warns(UserWarning, match="NaN/±Inf pixels are treated as nodata"):
        eager = da.load().geolesf.predict(pm, progress=False, **kw).values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lazy = rioxarray.open_rasterio(path, chunks={"y": 40, "x": 30}).geolesf.predict(pm, **kw).values
    np.testing.assert_array_equal(eager, file_ids)
    np.testing.assert_array_equal(lazy, file_ids)
    assert (file_ids[bad] == nodata).all(), "NaN/±Inf pixels must be written as nodata"
    assert (file_ids[~bad] != nodata).all(), "every finite pixel is classified"
    assert len(np.unique(file_ids[~bad])) > 1


def test_nan_pixels_are_nodata_on_the_whole_cube_path(tmp_path):
    """A .mat cube with NaN/Inf pixels: classified whole, those pixels 0 (nodata), equal to the tiled path."""
    import scipy.io

    from geolesf.io.hsi import read_cube
    from geolesf.methods.hsi.inference import classify_cube
    from geolesf.paths import embedded_data_root
    from geolesf.predict.tiled import predict_raster

    cube = read_cube(str(embedded_data_root() / "indian_pines" / "IP_200_M.mat"))
    crop = cube.data[40:56, 60:76].astype(np.float32)
    crop[3, 4, 10] = np.nan
    crop[7, 7, :] = np.inf
    crop[12, 1, 50] = -np.inf
    bad = ~np.isfinite(crop).all(axis=2)
    mat = tmp_path / "cube.mat"
    scipy.io.savemat(mat, {"cube": crop})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no CRS
        res = classify_cube(str(mat), "s2mamba:indian_pines_dase", tmp_path / "whole.tif", preview=False,
                            progress=False)
        tif = tmp_path / "cube.tif"
        with rasterio.open(tif, "w", driver="GTiff", height=16, width=16, count=crop.shape[2],
                           dtype="float32") as dst:
            dst.write(crop.transpose(2, 0, 1))
        tiled = predict_raster(tif, "s2mamba:indian_pines_dase", tmp_path / "tiled.tif", tile=16, overlap=0,
                               progress=False)
    with rasterio.open(tiled.out) as ds:
        tiled_ids = ds.read(1)
    assert (res.class_map[bad] == 0).all() and (res.class_map[~bad] > 0).all()
    np.testing.assert_array_equal(res.class_map, tiled_ids)


def test_one_class_labels_warn(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    scipy.io.savemat(tmp_path / "cube.mat", {"cube": rng.random((20, 20, 5)).astype(np.float32)})
    gt = np.zeros((20, 20), np.uint8)
    gt[2:18, 2:18] = 3
    scipy.io.savemat(tmp_path / "gt.mat", {"gt": gt})
    r = geolesf("train", "--model", "rf", "--cube", tmp_path / "cube.mat", "--labels", tmp_path / "gt.mat",
                "--split", "random", "--train-fraction", "0.5", "--out", tmp_path / "run")
    assert r.code == 0, r.err[-2000:]
    assert any(ln.startswith("warning: labels") and "single class" in ln for ln in r.err.splitlines()), r.err


def test_classes_without_test_pixels_warn():
    from geolesf.methods.hsi.train import warn_classes

    labels = np.array([[1, 1, 2], [2, 3, 0]])
    test = np.array([[True, False, True], [False, False, False]])
    with pytest.warns(UserWarning, match=r"classes \[3\] have no test pixels"):
        warn_classes([1, 2, 3], labels, test, "gt.tif", "random")


# --------------------------------------------------------------------------------------------
# family 5: faults a user can cause → one error line, exit 2


def test_truncated_scene(scene, checkpoint, tmp_path):
    bad = tmp_path / "truncated.tif"
    raw = scene.read_bytes()
    bad.write_bytes(raw[: len(raw) * 6 // 10])
    before = digest(bad)
    out = tmp_path / "out"
    out.mkdir()
    r = geolesf("predict", bad, "--checkpoint", checkpoint, "--out", out / "map.tif", "--no-preview")
    r.assert_user_error(str(bad))
    assert digest(bad) == before and _files(out) == set()


def test_truncated_class_map_to_export(scene, checkpoint, tmp_path):
    r = geolesf("predict", scene, "--checkpoint", checkpoint, "--out", tmp_path / "map.tif", "--no-preview")
    assert r.code == 0, r.err[-2000:]
    # an uncompressed class map cut in half: the header (and CLASS_NAMES) survive, the pixels do not
    with rasterio.open(tmp_path / "map.tif") as ds:
        profile, data, tags = ds.profile, ds.read(), ds.tags()
    full = tmp_path / "plain.tif"
    profile.update(compress=None, tiled=False)
    with rasterio.open(full, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
    raw = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) // 2])
    before = digest(cut)
    r = geolesf("export", cut, "--gpkg", tmp_path / "polys.gpkg")
    r.assert_user_error(str(cut))
    assert digest(cut) == before and not (tmp_path / "polys.gpkg").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(scene, checkpoint, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = geolesf("predict", scene, "--checkpoint", checkpoint, "--out", ro / "map.tif", "--no-preview")
        r.assert_user_error(str(ro))
        assert _files(ro) == set()
    finally:
        ro.chmod(0o755)


def test_out_is_an_existing_folder(scene, checkpoint, tmp_path):
    folder = tmp_path / "map.tif"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    r = geolesf("predict", scene, "--checkpoint", checkpoint, "--out", folder, "--no-preview")
    r.assert_user_error(str(folder.name), "is a folder")
    assert _files(folder) == {"keep.txt"} and _files(tmp_path) == {"map.tif"}


def test_read_only_destination_in_process(scene, checkpoint, tmp_path, monkeypatch, capsys):
    """The destination refuses writes (EACCES / EROFS, as for a non-root user or a read-only mount)."""
    from geolesf.cli import main as cli
    from geolesf.io import cog

    out = tmp_path / "ro" / "map.tif"
    out.parent.mkdir()
    for code, words in ((errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")):
        def refuse(path, *args, code=code, **kwargs):
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(cog, "open_temp", refuse)
        rc = cli.main(["predict", str(scene), "--checkpoint", str(checkpoint), "--out", str(out), "--no-preview"])
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert rc == 2 and "Traceback" not in err and len(errors) == 1, err
        assert str(out.parent) in errors[0] and words in errors[0]
        assert _files(out.parent) == set()


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "no space left on the device"), (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied"),
    (errno.EISDIR, "is a folder, expected a file"),
])
def test_os_errors_become_one_line(code, words):
    from geolesf.cli.main import os_error_message

    message = os_error_message(OSError(code, os.strerror(code), "/data/out/probs.tif"))
    assert message == f"/data/out/probs.tif: {words}"
    assert os_error_message(PermissionError(errno.EPERM, "x", "/a")) == "/a: operation not permitted"
    assert os_error_message(ValueError("bug")) is None


def test_out_of_space_while_writing(scene, checkpoint, tmp_path, monkeypatch, capsys):
    """ENOSPC (OSError, or GDAL's write error) while the probabilities are written: one line, exit 2."""
    from rasterio.errors import RasterioIOError

    from geolesf.cli import main as cli
    from geolesf.io import cog

    real = cog.finalize_cog
    probs = tmp_path / "probs.tif"

    for exc in (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(probs)),
                RasterioIOError(f"{probs}: Write failed: No space left on device")):
        def full(tmp, dest, *args, exc=exc, **kwargs):
            if Path(dest) == probs:
                raise exc
            return real(tmp, dest, *args, **kwargs)

        monkeypatch.setattr(cog, "finalize_cog", full)
        code = cli.main(["predict", str(scene), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "map.tif"),
                         "--probabilities", str(probs), "--no-preview"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and str(probs) in errors[0] and "o space left" in errors[0], err
        assert not probs.exists() and not (tmp_path / "map.tif").exists()  # nothing half-written is left


def test_devices_refused_at_parse_time(scene, checkpoint, tmp_path):
    r = geolesf("predict", scene, "--checkpoint", checkpoint, "--out", tmp_path / "m.tif", "--device", "banana")
    _parse_error(r, "--device", "banana")
    if not torch.cuda.is_available():
        r = geolesf("predict", scene, "--checkpoint", checkpoint, "--out", tmp_path / "m.tif", "--device", "cuda")
        _parse_error(r, "--device", "no CUDA GPU")
    assert _files(tmp_path) == set()


@pytest.mark.parametrize("args, fragment", [
    (("train", "--epochs", "-1"), "--epochs"),
    (("train", "--batch-size", "0"), "--batch-size"),
    (("train", "--lr", "0"), "--lr"),
    (("train", "--train-fraction", "1.5"), "--train-fraction"),
    (("predict", "s.tif", "--checkpoint", "m.pt", "--batch-size", "0"), "--batch-size"),
    (("predict", "s.tif", "--checkpoint", "m.pt", "--tile", "0"), "--tile"),
    (("predict", "s.tif", "--checkpoint", "m.pt", "--overlap", "-1"), "--overlap"),
    (("predict", "s.tif", "--checkpoint", "m.pt", "--workers", "0"), "--workers"),
    (("pseudo-label", "s.tif", "--checkpoint", "m.pt", "--out", "p.tif", "--margin", "1.5"), "--margin"),
    (("pseudo-label", "s.tif", "--checkpoint", "m.pt", "--out", "p.tif", "--device", "banana"), "--device"),
    (("evaluate", "--checkpoint", "m.pt", "--device", "banana"), "--device"),
])
def test_numbers_refused_at_parse_time(args, fragment, tmp_path):
    _parse_error(geolesf(*args, cwd=tmp_path), fragment)
    assert _files(tmp_path) == set()


def test_envi_negative_dimensions(tmp_path):
    (tmp_path / "c.hdr").write_text("ENVI\nsamples = -4\nlines = -5\nbands = 2\ndata type = 4\ninterleave = bsq\n")
    (tmp_path / "c.img").write_bytes(np.zeros(40, np.float32).tobytes())
    r = geolesf("predict", tmp_path / "c.hdr", "--checkpoint", "s2mamba:indian_pines_dase", "--out",
                tmp_path / "m.tif")
    r.assert_user_error("samples", "at least 1")
    assert not (tmp_path / "m.tif").exists()


# --------------------------------------------------------------------------------------------
# family 6: resource exhaustion refused before allocating


def test_envi_header_over_sparse_file_refused_by_budget(tmp_path):
    (tmp_path / "big.hdr").write_text("ENVI\nsamples = 1000\nlines = 1000\nbands = 50\ndata type = 4\n"
                                      "interleave = bsq\n")
    with open(tmp_path / "big.img", "wb") as fh:
        fh.truncate(1000 * 1000 * 50 * 4)  # 200 MB of holes
    r = geolesf("predict", tmp_path / "big.hdr", "--checkpoint", "s2mamba:indian_pines_dase", "--out",
                tmp_path / "m.tif", env={"GEOLESF_MAX_ARRAY_BYTES": str(64 << 20)})
    r.assert_user_error("big.img", "budget", "GEOLESF_MAX_ARRAY_BYTES")
    assert not (tmp_path / "m.tif").exists()


def test_envi_header_claiming_more_than_the_file(tmp_path):
    from geolesf.io.envi import read_envi

    (tmp_path / "c.hdr").write_text("ENVI\nsamples = 100\nlines = 100\nbands = 10\ndata type = 4\n")
    (tmp_path / "c.img").write_bytes(b"\0" * 4000)
    with pytest.raises(DataError, match="expects 400000"):
        read_envi(tmp_path / "c.hdr")


def test_mat_zlib_bomb_refused_before_loading(tmp_path, monkeypatch):
    import scipy.io

    from geolesf.io.hsi import read_cube

    bomb = tmp_path / "bomb.mat"
    scipy.io.savemat(bomb, {"cube": np.zeros((400, 400, 64), np.uint8)}, do_compression=True)  # 10 MB of zeros
    assert bomb.stat().st_size < 200_000
    monkeypatch.setenv("GEOLESF_MAX_ARRAY_BYTES", str(1 << 20))
    loaded = []
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **k: loaded.append(a) or {})
    with pytest.raises(DataError, match=r"bomb.mat:cube: array \(400, 400, 64\) needs 9.8 MiB"):
        read_cube(bomb)
    assert not loaded, "the variables must not be decompressed"
    r = geolesf("predict", bomb, "--checkpoint", "s2mamba:indian_pines_dase", "--out", tmp_path / "m.tif",
                env={"GEOLESF_MAX_ARRAY_BYTES": str(1 << 20)})
    r.assert_user_error("bomb.mat", "budget")


class _Endless:
    """A response streaming ``total`` bytes of zeros without Content-Length; counts what was pulled."""

    status_code, reason, headers = 200, "OK", {}

    def __init__(self, total: int) -> None:
        self.total, self.pulled = total, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def iter_content(self, n):
        while self.pulled < self.total:
            self.pulled += n
            yield b"\0" * n


def test_fetch_stops_when_the_stream_exceeds_the_catalog_size(tmp_path):
    from geolesf.data.fetch import DownloadChecksumError, download

    resp = _Endless(300 << 20)

    class Session:
        def get(self, *a, **k):
            return resp

    with pytest.raises(DownloadChecksumError, match="exceeds the catalog's size of 100,000 bytes"):
        download("http://example.invalid/f.bin", tmp_path / "f.bin", size=100_000, session=Session(),
                 progress=False)
    assert resp.pulled < 100_000 + (1 << 17), "the stream must stop right past the catalog's size"
    assert _files(tmp_path) == set()


# --------------------------------------------------------------------------------------------
# family 7: messages that say what is wrong


def test_folder_as_scene(checkpoint, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    r = geolesf("predict", folder, "--checkpoint", checkpoint, "--out", tmp_path / "m.tif")
    r.assert_user_error(str(folder), "is a folder, expected a file")
    from geolesf.io.hsi import read_cube

    with pytest.raises(DataError, match="is a folder, expected a file"):
        read_cube(folder)


@pytest.mark.parametrize("state", ["truncated", "misshaped"])
def test_bad_resume_state_is_one_line(state, scene, checkpoint, tmp_path):
    """A resume state that is cut short, or a valid archive holding the wrong arrays: one line, no output."""
    out = tmp_path / "m.tif"
    resume_file = tmp_path / ".m.tif.resume.npz"
    if state == "truncated":
        np.savez(resume_file, meta=np.frombuffer(b'{"format": "geolesf-tiled-resume/1"}', np.uint8),
                 carry=np.zeros((3, 4, 80), np.float32), pending_ids=np.zeros((4, 80), np.uint8))
        resume_file.write_bytes(resume_file.read_bytes()[:100])
    else:
        np.savez(resume_file, something=np.zeros(3))
    (tmp_path / ".m.tif.partial.tif").write_bytes(b"")
    before = digest(resume_file)
    r = geolesf("predict", scene, "--checkpoint", checkpoint, "--out", out, "--resume")
    r.assert_user_error(str(resume_file), "resume state")
    assert not out.exists() and digest(resume_file) == before


def test_folder_as_checkpoint(scene, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    r = geolesf("predict", scene, "--checkpoint", folder, "--out", tmp_path / "m.tif")
    r.assert_user_error(str(folder), "is a folder, expected a checkpoint file")
    assert _files(tmp_path) == {"run"}


@pytest.mark.parametrize("key, value", [("epochs", "-1"), ("batch_size", "0"), ("lr", "0")])
def test_trainer_numbers_in_a_config_are_refused(key, value, tmp_path):
    r = geolesf("train", "--set", f"trainer.{key}={value}", "--set", f"out={tmp_path / 'run'}", cwd=tmp_path)
    r.assert_user_error(f"trainer.{key}")
    assert not (tmp_path / "run").exists()


def test_broken_catalog_yaml_is_one_line(tmp_path):
    cat = tmp_path / "catalog"
    cat.mkdir()
    (cat / "mine.yaml").write_text("name: mine\nfiles:\n  - name: a.tif\n   size: [1,\n")
    r = geolesf("data", "list", env={"GEOLESF_CATALOG": str(cat)})
    line = r.assert_user_error("mine.yaml", "not valid YAML", "line")
    assert "\n" not in line


@pytest.mark.parametrize("name", [".", "./", "a/.", ""])
def test_catalog_file_name_dot_refused(tmp_path, name):
    from geolesf.data.catalog import load_file

    (tmp_path / "mine.yaml").write_text(
        f"name: mine\ntitle: Mine\nmodality: rgb\nfiles:\n  - name: '{name}'\n    url: http://x.invalid/a\n")
    with pytest.raises(DataError, match="name"):
        load_file(tmp_path / "mine.yaml")


@pytest.mark.parametrize("epochs, steps, fragment", [
    (-1, -1, "would train forever"), (-1, None, "would train forever"), (0, None, "trainer.epochs must be at least 1"),
    (-5, 10, "trainer.epochs must be at least 1"), (5, 0, "max_steps must be at least 1"),
])
def test_lightning_runs_that_never_end_or_start_are_refused(epochs, steps, fragment):
    """Every Lightning method builds its Trainer through training.make_trainer, which checks the run length."""
    from geolesf.errors import ConfigError
    from geolesf.training import check_run_length

    with pytest.raises(ConfigError, match=fragment):
        check_run_length(epochs, steps)
    check_run_length(-1, 100)  # epochs unbounded, steps bounded: a finite run
    check_run_length(5, -1)
