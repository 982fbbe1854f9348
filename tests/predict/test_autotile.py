"""``--tile auto`` (geolesf.predict.autotile), ``--memory-budget``/``--memory-format`` end to end, and the
one-copy patch gather (geolesf.predict.patches) against the two-copy gather it replaced."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geolesf.cli.main import main
from geolesf.errors import ConfigError
from geolesf.predict import autotile
from geolesf.predict.autotile import axis_work, choose_tile, parse_size, probe_activation_bytes, tile_bytes, waste
from geolesf.predict.patches import PatchGatherer
from tests.checkpoints import seeded_unet_checkpoint
from tests.predict.conftest import TinyPatch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ sizes, waste, memory model


def test_parse_size():
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("2GB") == 2 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("1.5 g") == 3 << 29
    assert parse_size("65536") == 65536
    assert parse_size(4096) == 4096
    for bad in ("2XB", "", "-1G", "0"):
        with pytest.raises(ConfigError, match="--memory-budget"):
            parse_size(bad)


def test_waste_follows_how_the_tile_count_rounds():
    # 8,192 px with 512/64 tiles: ceil((8192 - 64) / 448) = 19 tiles of 512 = 9,728 px per side
    assert axis_work(8192, 512, 64) == (19, 9728)
    assert waste(8192, 8192, 512, 64) == pytest.approx((9728 / 8192) ** 2)
    assert waste(8192, 8192, 512, 64) == pytest.approx(1.41015625)
    # 1,440 px tiles need 6 (8,640 px), 32 px less needs 7 (9,856 px)
    assert axis_work(8192, 1440, 64) == (6, 8640)
    assert axis_work(8192, 1408, 64) == (7, 9856)
    # a tile larger than the side: one tile, padded to the size divisor
    assert axis_work(718, 1024, 64, divisor=32) == (1, 736)
    assert waste(100, 100, 128, 16) == 1.0


def test_tile_bytes_by_hand():
    # batch 2 of 100×100 tiles: per pixel 10 (model) + 8·3 (input) + 4·2 (output); one tile 4·(2+11);
    # per column 100 (band) + 4·3·2·8 (carry)
    got = tile_bytes(100, 100, 2, act_px=10, bands=3, classes=2, width=500, overlap=8)
    assert got == 2 * 100 * 100 * 42 + 100 * 100 * 52 + 500 * (100 + 192)


# ------------------------------------------------------------------ the chooser


def test_choose_tile_hand_checked():
    # 1,000² scene, no overlap, divisor 8, 100 B/px in the model, 3 bands, 2 classes: at batch 1 a t px tile
    # needs t²·184 + 1000·t bytes.
    kw = dict(overlap=0, divisor=8, act_px=100, bands=3, classes=2)
    whole = choose_tile(1000, 1000, budget=185_000_000, **kw)
    assert (whole.tile, whole.batch, whole.tiles, whole.waste) == (1000, 1, 1, 1.0)
    # 100 MB: t ≤ 734. 2 tiles need t ≥ 500 (504: 1,008 px), 3 tiles t ≥ 334 (336: 1,008 px as well) → the
    # smaller tile on the tie; 256 would need 4 tiles (1,024 px). Batch: the 3 tiles of a row fit
    # (3·336²·132 + 336²·52 + 336,000 = 51 MB).
    c = choose_tile(1000, 1000, budget=100_000_000, **kw)
    assert (c.tile, c.batch, c.tiles) == (336, 3, 9)
    assert c.waste == pytest.approx((1008 / 1000) ** 2)
    assert c.memory == 3 * 336 * 336 * 132 + 336 * 336 * 52 + 336_000 <= c.budget
    # a given batch of 5: t²·712 + 1000·t ≤ 1e8 → t ≤ 374: still 336
    c5 = choose_tile(1000, 1000, budget=100_000_000, batch=5, **kw)
    assert (c5.tile, c5.batch) == (336, 5)
    assert "tile 336, batch 3" in c.describe() and "1.016" in c.describe()


def test_choose_tile_batch_capped_by_budget_and_pixels_per_forward():
    # 4,096², no overlap, divisor 256: 256 and 512 px tiles both cover it exactly (waste 1) → 256; at batch B
    # it needs B·256²·1012 + 256²·48 + 4096·256 bytes: 4 fit 300 MiB, 5 do not
    small = choose_tile(4096, 4096, overlap=0, divisor=256, act_px=1000, bands=1, classes=1, budget=300 << 20)
    assert (small.tile, small.batch, small.waste) == (256, 4, 1.0)
    # a strip 64 tiles wide with room for all: at most 512² × 8 pixels per forward (32 tiles of 256²)
    strip = choose_tile(256, 16384, overlap=0, divisor=256, act_px=1, bands=1, classes=1, budget=1 << 40)
    assert (strip.tile, strip.batch, strip.tiles) == (256, autotile.PIXELS_PER_FORWARD // 256**2, 64)


def test_budget_too_small_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"^--memory-budget 1 MiB is too small: the smallest tile \(256 px, "
                       r"batch 1\) needs \d+ MiB; raise it or give --tile$"):
        choose_tile(4096, 4096, overlap=64, divisor=8, act_px=128, bands=3, classes=4, budget=1 << 20)


def test_probe_counts_the_live_tensors_of_a_forward():
    # a 1×1 convolution 3 → 8 channels: its float32 output (32 B/px), then the softmax's (32 B/px) while
    # the first is still alive
    conv = nn.Conv2d(3, 8, 1)
    assert probe_activation_bytes(conv, 3) == 64.0
    assert probe_activation_bytes(conv, 3, softmax=False) == 32.0
    with pytest.raises(ConfigError, match="not a PyTorch module"):
        probe_activation_bytes(lambda x: x, 3)


class FixedSize(nn.Module):
    def forward(self, x):
        if x.shape[-1] != 224:
            raise RuntimeError("input must be 224 px\nmore detail")
        return x


def test_probe_failure_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"^--tile auto: the probe forward of a 128-px tile failed \(input must be "
                       r"224 px\); give --tile$"):
        probe_activation_bytes(FixedSize(), 3)


def test_default_budget_is_a_share_of_available_memory(monkeypatch):
    monkeypatch.setattr(autotile, "available_memory", lambda: 2 << 30)
    assert autotile.default_budget() == 512 << 20
    monkeypatch.setattr(autotile, "available_memory", lambda: 64 << 30)
    assert autotile.default_budget() == 1 << 30
    monkeypatch.setattr(autotile, "available_memory", lambda: None)
    assert autotile.default_budget() == 1 << 30


# ------------------------------------------------------------------ the CLI end to end


def _map_sha(path):
    with rasterio.open(path) as src:
        return hashlib.sha256(src.read().tobytes()).hexdigest(), src.tags()


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    return seeded_unet_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.pt")


def test_cli_tile_auto_equals_the_explicit_tile(rgb_byte, unet_ckpt, tmp_path, capsys):
    common = ["predict", str(rgb_byte), "--checkpoint", str(unet_ckpt), "--no-preview", "--memory-format", "contiguous"]
    assert main([*common, "--out", str(tmp_path / "auto.tif"), "--tile", "auto", "--memory-budget", "48MiB"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("--tile auto:"))
    tile, batch = (int(w.strip(",")) for w in line.split()[3:6:2])
    # 791×718 px: the budget keeps the tile below the scene, so tiles overlap and blend
    assert 256 <= tile < 718 and batch >= 1
    assert main([*common, "--out", str(tmp_path / "fixed.tif"), "--tile", str(tile), "--batch-size", str(batch)]) == 0
    auto, fixed = _map_sha(tmp_path / "auto.tif"), _map_sha(tmp_path / "fixed.tif")
    assert auto[1]["tile"] == str(tile)
    assert auto[0] == fixed[0]


def test_cli_memory_format_reaches_the_predictor(rgb_byte, unet_ckpt, tmp_path, monkeypatch):
    from geolesf.predict import rowloop

    seen = []
    real = rowloop.use_channels_last
    monkeypatch.setattr(rowloop, "use_channels_last", lambda m, d, f: seen.append(f) or real(m, d, f))
    for fmt in ("channels_last", "contiguous"):
        assert main(["predict", str(rgb_byte), "--checkpoint", str(unet_ckpt), "--no-preview", "--tile", "512",
                     "--memory-format", fmt, "--out", str(tmp_path / f"{fmt}.tif")]) == 0
    assert seen == ["channels_last", "contiguous"]


def test_cli_bad_auto_arguments(rgb_byte, unet_ckpt, tmp_path, capsys):
    out = tmp_path / "map.tif"
    base = ["predict", str(rgb_byte), "--checkpoint", str(unet_ckpt), "--no-preview", "--out", str(out)]
    assert main([*base, "--tile", "auto", "--memory-budget", "1MiB"]) == 2
    err = capsys.readouterr().err
    assert "error: --memory-budget 1 MiB is too small" in err and not out.exists()
    for bad in (["--tile", "aut"], ["--memory-budget", "2XB"], ["--memory-format", "nhwc"]):
        with pytest.raises(SystemExit) as exc:
            main([*base, *bad])
        assert exc.value.code == 2
    assert main([*base[:-2], "--out-dir", str(tmp_path / "d"), "--tile", "auto"]) == 2
    assert "--tile auto" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ the patch gather


def _two_copy_gather(g: PatchGatherer, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The gather before: index ``(bands, n, P, P)``, then a second copy to ``(n, bands, P, P)``."""
    off = torch.arange(g.patch_size)
    rr = (rows[:, None] + off)[:, :, None]
    cc = (cols[:, None] + off)[:, None, :]
    return g.padded[:, rr, cc].permute(1, 0, 2, 3).contiguous()


@pytest.fixture(scope="module")
def ip_crop():
    from geolesf.io.hsi import read_cube
    from tests.scenes import EMBEDDED

    return np.ascontiguousarray(read_cube(EMBEDDED / "IP_200_M.mat").data[20:60, 30:75], dtype=np.float32)


@pytest.mark.parametrize("padding", ["symmetric", "reflect", "zero"])
def test_one_copy_gather_equals_the_two_copy_gather(ip_crop, padding):
    g = PatchGatherer(ip_crop, 7, padding)
    rows, cols = (torch.from_numpy(a.ravel()) for a in np.divmod(np.arange(ip_crop.shape[0] * ip_crop.shape[1]),
                                                                  ip_crop.shape[1]))
    ref = _two_copy_gather(g, rows, cols)
    assert torch.equal(g(rows, cols), ref)
    buf = g.buffer(len(rows))
    out = g(rows[:100], cols[:100], out=buf[:100])
    assert out.data_ptr() == buf.data_ptr() and torch.equal(out, ref[:100])


def test_tiled_patch_prediction_unchanged_on_indian_pines(ip_crop, tmp_path, monkeypatch):
    """Class map and probabilities of a patch model over an Indian Pines crop: identical bytes with the
    one-copy gather into the reused buffer and with the gather it replaced."""
    from geolesf.predict.tiled import predict_raster

    model = TinyPatch(ip_crop.shape[2], 7, classes=5).eval()
    model.patch_size = 7
    src = ip_crop.transpose(2, 0, 1)
    kw = dict(tile=16, overlap=0, pixel_batch=100, progress=False, qml=False, class_names=list("abcde"))

    def run(name):
        from geolesf.predict.model import as_predict_model

        pm = as_predict_model(model, kind="pixel", class_names=list("abcde"))
        res = predict_raster(src, pm, tmp_path / f"{name}.tif", probabilities=tmp_path / f"{name}_p.tif",
                             **{k: v for k, v in kw.items() if k != "class_names"})
        return _map_sha(res.out)[0], _map_sha(res.probabilities)[0]

    after = run("after")
    monkeypatch.setattr(PatchGatherer, "__call__", lambda g, r, c, out=None: _two_copy_gather(g, r, c))
    assert run("before") == after


def test_detection_checkpoints_refuse_tile_auto():
    """ndi-wsod tiles with its own detector grid: auto (a dense-model choice) is refused before any work."""
    from geolesf.formats import PredictRequest
    from geolesf.methods.wsod.inference import run

    for kw in ({"tile": "auto"}, {"memory_budget": 1 << 30}):
        with pytest.raises(ConfigError, match=r"^--tile auto/--memory-budget: not available for detection"):
            run(PredictRequest(scene="missing.tif", checkpoint="missing.pt", out="boxes.gpkg", **kw))
