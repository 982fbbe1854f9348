"""dask.distributed prediction: the same bytes as the single-process predictor, retries, many scenes."""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geolesf.errors import ConfigError
from geolesf.predict.distributed import predict_distributed, scene_outputs
from geolesf.predict.model import as_predict_model
from geolesf.predict.options import output_dtype
from geolesf.predict.parts import RowPlan, predict_rows, split_rows
from geolesf.predict.sources import open_source
from geolesf.predict.tiled import predict_file, predict_raster
from tests.predict.conftest import TinyPatch

# Worker processes do not import the tests package: ship this module's classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

OPTS = dict(tile=64, overlap=16, block=64)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Workers run torch on one thread (threads_per_worker=1); the single-process references here
    must too: a convolution's float32 sums can differ in the last bit between thread counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unet_checkpoint(path, seed=0):
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint
    from geolesf.methods.unet.checkpoint import save as save_segmentation_checkpoint
    from geolesf.methods.unet.model import unet

    torch.manual_seed(seed)
    args = dict(in_chans=3, num_classes=4, base=4, depth=2)
    ck = SegmentationCheckpoint(
        model=unet(**args).eval(), model_name="unet", model_args=args,
        band_mean=np.array([60, 55, 50], np.float32), band_std=np.array([30, 30, 30], np.float32),
        class_ids=[1, 2, 3, 4], class_names=["water", "forest", "field", "urban"],
        colors=["#1f78b4", "#33a02c", "#ffff99", "#e31a1c"],
    )
    save_segmentation_checkpoint(path, ck)
    return path


@pytest.fixture(scope="module")
def client():
    """The ``--workers 2`` path: a LocalCluster of 2 single-threaded worker processes."""
    from geolesf.predict.distributed import dask_client

    with dask_client(workers=2, dashboard=":0", quiet=True) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        yield c


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _unet_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.pt")


@pytest.fixture(scope="module")
def second_crop(rgb_byte, tmp_path_factory):
    """Another real window of the Landsat scene (230×200, nodata collar on the right)."""
    from rasterio.windows import Window

    out = tmp_path_factory.mktemp("scenes2") / "east.tif"
    with rasterio.open(rgb_byte) as src:
        win = Window(600, 300, 191, 230)
        profile = src.profile | {"height": 230, "width": 191, "transform": src.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


def _same_bytes(a, b):
    assert a.read_bytes() == b.read_bytes(), f"{a.name} and {b.name} differ"


class FailOnce(nn.Module):
    """A tiny conv net whose forward raises the first time it runs anywhere (marker file)."""

    def __init__(self, marker, always=False):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1))
        self.marker, self.always = str(marker), always

    def forward(self, x):
        from pathlib import Path

        marker = Path(self.marker)
        if self.always or not marker.exists():
            marker.touch()
            raise RuntimeError("injected task failure")
        return self.net(x / 255)


def test_byte_identical_to_single_process(client, rgb_crop, ckpt, tmp_path):
    ref, ref_p = tmp_path / "ref.tif", tmp_path / "ref_p.tif"
    predict_file(rgb_crop, ckpt, ref, probabilities=ref_p, batch_size=3, progress=False, **OPTS)
    out, probs = tmp_path / "dist.tif", tmp_path / "dist_p.tif"
    [res] = predict_distributed([rgb_crop], ckpt, [out], probabilities=[probs], client=client, part_rows=64,
                                batch_size=3, progress=False, **OPTS)
    _same_bytes(ref, out)
    _same_bytes(ref_p, probs)
    _same_bytes(ref.with_suffix(".qml"), out.with_suffix(".qml"))
    assert res.parts == 5 and res.tiles == 6 * 6 and res.tiles_computed > res.tiles  # recomputed overlap rows
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_workers_pin_the_mmap_threshold(client, rgb_crop, ckpt, tmp_path):
    """Each worker that ran a part pinned glibc's mmap threshold, as the single-process predictor does."""
    [res] = predict_distributed([rgb_crop], ckpt, [tmp_path / "m.tif"], client=client, part_rows=64, batch_size=3,
                                progress=False, **OPTS)

    def pinned():
        import os

        from geolesf.predict import batching

        return os.getpid(), list(batching._pinned)

    by_pid = {str(pid): p for pid, p in client.run(pinned).values()}
    ran = {w.rsplit(":", 1)[1] for w in res.workers}
    assert ran and all(by_pid[pid] == [4 << 20] for pid in ran), (ran, by_pid)


def test_retry_after_task_failure_gives_identical_bytes(client, rgb_crop, tmp_path):
    marker = tmp_path / "failed-once"
    model = FailOnce(marker)
    ref = tmp_path / "ref.tif"
    marker.touch()  # the reference run must not fail
    predict_raster(rgb_crop, model, ref, progress=False, class_names=["a", "b", "c"], **OPTS)
    marker.unlink()
    out = tmp_path / "dist.tif"
    predict_distributed([rgb_crop], model, [out], client=client, part_rows=128, retries=2, progress=False,
                        class_names=["a", "b", "c"], **OPTS)
    assert marker.exists(), "no task failed: the test did not test a retry"
    _same_bytes(ref, out)


def test_failed_part_leaves_no_output(client, rgb_crop, second_crop, tmp_path):
    model = FailOnce(tmp_path / "marker", always=True)
    outs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(RuntimeError, match="injected task failure"):
        predict_distributed([rgb_crop, second_crop], model, outs, client=client, retries=1, progress=False,
                            class_names=["a", "b", "c"], **OPTS)
    assert list(tmp_path.iterdir()) == [tmp_path / "marker"]


def test_many_scenes_at_once(client, rgb_crop, second_crop, ckpt, tmp_path):
    refs = []
    for scene in (rgb_crop, second_crop):
        refs.append(tmp_path / f"ref_{scene.stem}.tif")
        predict_file(scene, ckpt, refs[-1], probabilities=refs[-1].with_suffix(".p.tif"),
                     probabilities_dtype="uint8", progress=False, **OPTS)
    out_dir = tmp_path / "maps"
    out_dir.mkdir()
    outs = scene_outputs([rgb_crop, second_crop], out_dir)
    results = predict_distributed([rgb_crop, second_crop], ckpt, outs, client=client, part_rows=128,
                                  probabilities=[o.with_suffix(".p.tif") for o in outs],
                                  probabilities_dtype="uint8", progress=False, **OPTS)
    for ref, res in zip(refs, results):
        _same_bytes(ref, res.out)
        _same_bytes(ref.with_suffix(".p.tif"), res.probabilities)
    assert [r.out.name for r in results] == ["crop.tif", "east.tif"]


def test_cli_many_scenes_on_a_scheduler(client, rgb_crop, second_crop, ckpt, tmp_path, capsys):
    from geolesf.cli.main import main

    out_dir = tmp_path / "maps"
    out_dir.mkdir()
    code = main(["predict", str(rgb_crop), str(second_crop), "--checkpoint", str(ckpt), "--out-dir",
                 str(out_dir), "--scheduler", client.scheduler.address, "--tile", "64", "--overlap", "16",
                 "--part-rows", "512"])
    assert code == 0, capsys.readouterr().err
    ref = tmp_path / "ref.tif"
    predict_file(second_crop, ckpt, ref, tile=64, overlap=16, progress=False)
    _same_bytes(ref, out_dir / "east.tif")
    assert (out_dir / "crop.tif").is_file() and (out_dir / "crop.qml").is_file()
    assert "dashboard" in capsys.readouterr().err
    # several scenes need --out-dir; a folder that does not exist is refused before any work
    assert main(["predict", str(rgb_crop), str(second_crop), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "x.tif")]) == 2
    assert main(["predict", str(rgb_crop), "--checkpoint", str(ckpt), "--out-dir", str(tmp_path / "nope"),
                 "--workers", "2"]) == 2
    assert "--out-dir" in capsys.readouterr().err


@pytest.mark.parametrize("height", [197, 300])
def test_row_parts_equal_whole_run_in_process(height, tmp_path):
    """Uneven grids (tile starts 34 px apart: three tile rows overlap a pixel) and a patch model."""
    rng = np.random.default_rng(height)
    scene = rng.normal(size=(3, height, 150)).astype(np.float32)
    model = FailOnce(tmp_path / "m")
    (tmp_path / "m").touch()
    patch = TinyPatch(3, 5).eval()
    patch.patch_size = 5
    for pm_model, kw in ((model, dict(tile=128, overlap=60, blend="cosine", batch_size=2)),
                         (patch, dict(tile=64, overlap=0, blend="none", batch_size=1))):
        kind = "dense" if pm_model is model else "pixel"
        pm = as_predict_model(pm_model, kind=kind)
        out, probs = tmp_path / "m.tif", tmp_path / "p.tif"
        with pytest.warns(UserWarning, match="no CRS"):
            predict_raster(scene, pm, out, probabilities=probs, block=16, progress=False, **kw)
        dtype, nodata_out = output_dtype(pm.class_ids, None)
        from geolesf.predict.blend import check_geometry

        margin = 0 if kind == "pixel" else check_geometry(kw["tile"], kw["overlap"], kw["blend"], None)
        plan = RowPlan(height=height, width=150, tile=kw["tile"], overlap=kw["overlap"], blend=kw["blend"],
                       margin=margin, batch_size=kw["batch_size"], blend_on="probabilities", want_probs=True,
                       prob_u8=False, out_dtype=dtype, nodata_out=nodata_out, nodata=None, device="cpu",
                       pixel_batch=4096, block=16)
        src = open_source(scene)
        parts = [predict_rows(src, pm, plan, r0, r1) for r0, r1 in split_rows(height, 16, 32)]
        with rasterio.open(out) as o, rasterio.open(probs) as p:
            np.testing.assert_array_equal(np.concatenate([q.ids for q in parts]), o.read(1))
            got = np.concatenate([q.probs for q in parts], axis=1)
            assert got.view(np.uint32).tobytes() == p.read().view(np.uint32).tobytes()


def test_bad_arguments(rgb_crop, ckpt, tmp_path):
    with pytest.raises(ConfigError, match="multiple of the block size"):
        predict_distributed([rgb_crop], ckpt, [tmp_path / "a.tif"], part_rows=100, workers=1, **OPTS)
    with pytest.raises(ConfigError, match="same output"):
        predict_distributed([rgb_crop, rgb_crop], ckpt, [tmp_path / "a.tif"] * 2, workers=1, **OPTS)
    with pytest.raises(ConfigError, match="exclude each other"):
        predict_distributed([rgb_crop], ckpt, [tmp_path / "a.tif"], workers=2, scheduler="tcp://x:1", **OPTS)
    assert list(tmp_path.iterdir()) == []

