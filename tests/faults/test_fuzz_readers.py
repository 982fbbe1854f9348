"""Property-based fuzzing of every reader (issue 18): any input either loads or raises a ``GeolesfError``.

Each reader gets small valid seed files built here (a GeoTIFF written by rasterio, ``.mat`` files
written by scipy and h5py, an ENVI ``.hdr`` + ``.img`` pair, a config dumped from the dataclass
defaults, a catalog entry, a resume state written by ``save_state``, unet and S²Mamba checkpoints
written by their ``checkpoint.save``). Hypothesis mutates their bytes (bit flips, truncation at any
offset, insertion, deletion, overwrites with hostile integers) or, for the text formats, generates
hostile text (numbers that are negative, huge or not numbers; YAML with wrong types, nesting,
unknown keys, anchors, bad tags). Every example is written to a fresh temporary folder and read;
success and :class:`~geolesf.errors.GeolesfError` pass, anything else fails.

Runs are derandomised (CI is reproducible) and small: 200 examples per reader.
"""

from __future__ import annotations

import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geolesf.errors import GeolesfError

EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

pytestmark = pytest.mark.filterwarnings("ignore")


# --------------------------------------------------------------------------------------------
# strategies


HOSTILE_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_ops: int = 3, wide_ints: bool = True) -> bytes:
    """``seed`` after 1..max_ops bit flips, truncations, insertions, deletions or overwrites.

    Offsets favour the first and last 512 bytes, where headers and directories live.
    """
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        pos = draw(st.one_of(st.integers(0, min(n, 512)), st.integers(0, n),
                             st.integers(max(0, n - 512), n)))
        op = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete", "overwrite", "int"]))
        if op == "flip" and n:
            data[min(pos, n - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        elif op == "int" and wide_ints:
            value = draw(st.sampled_from(HOSTILE_INTS))
            fmt = draw(st.sampled_from(["<H", ">H", "<I", ">I"]))
            chunk = struct.pack(fmt, value & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF))
            data[pos:pos + len(chunk)] = chunk
    return bytes(data)


HOSTILE_NUMBERS = ["-1", "-2", "-3", "-4", "-8", "-48", "0", "1", "8", "16", "2", "3", "4", "12", "5", "6", "9", "1e3", "0x10", "nan", "inf", "-inf",
                   "9" * 30, "-" + "9" * 30, str(2**63), str(2**31), "", "abc", "8.5", "١٢", "²", "{8}", "{}",
                   "8 8", "+8", "--8", "1_0"]
HOSTILE_SCALARS = ["null", "~", "true", "no", "-1", "0", "1e400", "-1e400", ".nan", ".inf", "1" * 400,
                   "2020-13-45", "2020-02-30 25:61:61", "0x", "0o9", "!!int abc", "!!float x",
                   "!!binary '@@@'", "!!python/object:os.system {}", "!!timestamp 2020-99-99", "'x'",
                   "[1, 2]", "{a: 1}", "'$HOME/~'", "~/x", "--5", "²", "-", "&a 1", "*nowhere", "!!set {a}",
                   "'" + "a" * 300 + "'", "[[[[[[]]]]]]", "{? [1]: 2}", "!!omap [a: 1]", "!!str", "0b101",
                   "1:20", "12345678901234567890123"]


def yaml_scalar() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_SCALARS), st.sampled_from(HOSTILE_SCALARS), st.integers().map(str),
                     st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).map(repr))


@st.composite
def yaml_text(draw: st.DrawFn, keys: list[str], sections: dict[str, list[str]]) -> str:
    """A YAML mapping of known and unknown keys whose values have the wrong type, depth or tag."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.one_of(st.sampled_from(keys), st.text("abcxyz_1", min_size=1, max_size=6),
                             st.sampled_from(["1", "null", "? [a]", "<<", "'task'"])))
        if key in sections and draw(st.booleans()):
            lines.append(f"{key}:")
            for _ in range(draw(st.integers(0, 4))):
                sub = draw(st.one_of(st.sampled_from(sections[key] or ["x"]), st.text("abq_", min_size=1, max_size=5)))
                lines.append(f"  {sub}: {draw(yaml_scalar())}")
            continue
        kind = draw(st.sampled_from(["scalar", "scalar", "list", "deep", "anchor", "merge"]))
        if kind == "scalar":
            lines.append(f"{key}: {draw(yaml_scalar())}")
        elif kind == "list":
            items = draw(st.lists(yaml_scalar(), max_size=4))
            lines.append(f"{key}: [{', '.join(items)}]")
        elif kind == "deep":
            depth = draw(st.sampled_from([5, 60, 600]))
            lines.append(f"{key}: " + "[" * depth + "]" * depth)
        elif kind == "anchor":
            lines.append(f"{key}: &anc {{a: [1, 2], b: {draw(yaml_scalar())}}}")
            lines.append(f"{key}_again: *anc")
        else:
            lines.append(f"{key}: {{<<: [{{a: 1}}, {draw(yaml_scalar())}]}}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(
            ["\t: x", "- list", "%YAML 1.1\n---", "...", ":", "{", "'", "&a [*a]", "key: value: other",
             "\x00", "\ufeff", "a: !!python/name:os.system", "---\n---"])))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# harness


def check(name: str, data: bytes | str, read: Callable[[Path], Any], extra: dict[str, bytes] | None = None) -> None:
    """Write ``data`` to ``name`` (and ``extra`` files beside it) in a fresh folder; call ``read``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        for other, content in (extra or {}).items():
            (Path(tmp) / other).write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read(path)
            except GeolesfError:
                pass


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small valid files of every format, as bytes."""
    import h5py
    import rasterio
    import scipy.io
    import torch
    from rasterio.transform import from_origin

    from geolesf.config import TrainConfig, to_dict
    from geolesf.predict.resume import ResumeState, save_state

    root = tmp_path_factory.mktemp("seeds")
    out: dict[str, bytes] = {}
    rng = np.random.default_rng(0)

    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 2, "dtype": "uint8", "crs": "EPSG:32616",
               "transform": from_origin(500000, 4500000, 10, 10), "nodata": 0}
    with rasterio.open(root / "scene.tif", "w", **profile) as dst:
        dst.write(rng.integers(0, 255, (2, 8, 8), dtype=np.uint8))
        dst.update_tags(1, wavelength="450.0")
        dst.update_tags(2, wavelength="550.0")
    out["tif"] = (root / "scene.tif").read_bytes()
    with rasterio.open(root / "labels.tif", "w", **{**profile, "count": 1, "compress": "deflate"}) as dst:
        dst.write(rng.integers(0, 4, (1, 8, 8), dtype=np.uint8))
    out["labels_tif"] = (root / "labels.tif").read_bytes()

    scipy.io.savemat(root / "v5.mat", {"cube": rng.random((4, 4, 3)).astype(np.float32),
                                       "gt": rng.integers(0, 3, (4, 4)).astype(np.uint8)})
    out["mat"] = (root / "v5.mat").read_bytes()
    scipy.io.savemat(root / "v5z.mat", {"cube": rng.random((4, 4, 3))}, do_compression=True)
    out["matz"] = (root / "v5z.mat").read_bytes()
    with h5py.File(root / "v73.mat", "w") as fh:
        fh["cube"] = rng.random((3, 4, 4)).astype(np.float32)
        fh["gt"] = rng.integers(0, 3, (4, 4)).astype(np.float64)
    out["mat73"] = (root / "v73.mat").read_bytes()

    out["envi_img"] = rng.integers(0, 1000, (2, 4, 3), dtype=np.int16).astype("<i2").tobytes()
    out["envi_hdr"] = (
        b"ENVI\ndescription = {fuzz seed}\nsamples = 3\nlines = 4\nbands = 2\nheader offset = 0\n"
        b"file type = ENVI Standard\ndata type = 2\ninterleave = bsq\nbyte order = 0\n"
        b"band names = {\n a, b}\nwavelength = {450.5, 550.5}\ndata ignore value = -1\n"
    )

    out["config"] = yaml.safe_dump(to_dict(TrainConfig())).encode()
    out["catalog"] = (Path(__file__).resolve().parents[2] / "geolesf" / "data_catalog" / "landsat7_rgb.yaml").read_bytes()

    save_state(root / "state.npz", ResumeState(
        fingerprint="f" * 64, next_row=2, flushed=8, carry_start=8,
        carry=rng.random((3, 4, 6)).astype(np.float32), pending_ids=np.zeros((2, 6), np.uint8),
        pending_probs=rng.random((2, 2, 6)).astype(np.float32), tiles_done=3, tiles_skipped=1))
    out["resume"] = (root / "state.npz").read_bytes()

    from geolesf.methods.hsi.checkpoint import PatchCheckpoint
    from geolesf.methods.hsi.checkpoint import save as save_patch
    from geolesf.methods.hsi.s2mamba import s2mamba
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint
    from geolesf.methods.unet.checkpoint import save as save_seg
    from geolesf.methods.unet.model import unet

    torch.manual_seed(0)
    args = {"in_chans": 2, "num_classes": 3, "base": 2, "depth": 1}
    save_seg(root / "unet.pt", SegmentationCheckpoint(
        model=unet(**args).eval(), model_name="unet", model_args=args,
        band_mean=np.array([1, 2], np.float32), band_std=np.array([1, 1], np.float32),
        class_ids=[1, 2, 3], class_names=["a", "b", "c"], colors=["#000000", "#ff0000", "#00ff00"]))
    out["unet"] = (root / "unet.pt").read_bytes()
    pargs = {"in_chans": 2, "num_classes": 3, "patch_size": 3, "dims": 4, "d_state": 2}
    save_patch(root / "patch.pt", PatchCheckpoint(
        model=s2mamba(**pargs).eval(), model_name="s2mamba", model_args=pargs, patch_size=3,
        padding="symmetric", band_mean=np.array([1, 2], np.float32), band_std=np.array([1, 1], np.float32),
        pca_components=None, pca_mean=None, class_ids=[1, 2, 3], class_names=["a", "b", "c"],
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]], extra={}))
    out["patch"] = (root / "patch.pt").read_bytes()
    return out


def _seed(name: str) -> bytes:
    if name not in SEEDS and name in METHOD_SEEDS:  # built on first use, once per module
        METHOD_SEEDS[name](METHOD_ROOT[0])
    return SEEDS[name]


SEEDS: dict[str, bytes] = {}
METHOD_ROOT: list[Path] = []


@pytest.fixture(scope="module")
def method_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the method checkpoints (and the SAM base file a PEFT checkpoint points to) live for the module."""
    return tmp_path_factory.mktemp("method_seeds")


@pytest.fixture(autouse=True)
def _seeds_loaded(seeds: dict[str, bytes], method_root: Path) -> None:
    SEEDS.update(seeds)
    METHOD_ROOT[:] = [method_root]


def from_seed(name: str, **kwargs: Any) -> st.SearchStrategy[bytes]:
    """Mutations of seed ``name`` (built lazily: strategies are defined before the fixture runs)."""
    return st.deferred(lambda: mutated(_seed(name), **kwargs))


# --------------------------------------------------------------------------------------------
# GeoTIFF (rasterio)


def _read_scene(path: Path) -> None:
    from geolesf.predict.sources import open_source

    src = open_source(str(path))
    try:
        src.read(0, src.height, 0, src.width)
    finally:
        src.close()


@FUZZ
@given(data=from_seed("tif", wide_ints=False))
def test_fuzz_geotiff_open_source(data: bytes) -> None:
    check("scene.tif", data, _read_scene)


@FUZZ
@given(data=from_seed("tif", wide_ints=False))
def test_fuzz_geotiff_read_cube(data: bytes) -> None:
    from geolesf.io.hsi import read_cube

    check("scene.tif", data, read_cube)


@FUZZ
@given(data=from_seed("labels_tif", wide_ints=False))
def test_fuzz_geotiff_read_labels(data: bytes) -> None:
    from geolesf.io.hsi import read_labels

    check("labels.tif", data, read_labels)


def _read_cube_and_labels(path: Path) -> None:
    """Read ``path`` as a cube, then (whatever happened) as a label map: both readers see every input."""
    from geolesf.io.hsi import read_cube, read_labels

    try:
        read_cube(path)
    finally:
        read_labels(path)


# --------------------------------------------------------------------------------------------
# MATLAB


@FUZZ
@given(data=st.one_of(from_seed("mat"), from_seed("matz")))
def test_fuzz_mat_v5(data: bytes) -> None:
    check("cube.mat", data, _read_cube_and_labels)


@FUZZ
@given(data=from_seed("mat73", wide_ints=False))
def test_fuzz_mat_v73(data: bytes) -> None:
    check("cube.mat", data, _read_cube_and_labels)


# --------------------------------------------------------------------------------------------
# ENVI


@FUZZ
@given(hdr=from_seed("envi_hdr"), img=st.one_of(st.just(b""), from_seed("envi_img")))
def test_fuzz_envi_mutated(hdr: bytes, img: bytes) -> None:
    check("cube.hdr", hdr, _read_cube_and_labels, extra={"cube.img": img or SEEDS["envi_img"]})


ENVI_KEYS = ["samples", "lines", "bands", "data type", "header offset", "byte order", "interleave",
             "band names", "wavelength", "data ignore value", "file type"]


@st.composite
def envi_header(draw: st.DrawFn) -> str:
    fields = {"samples": "3", "lines": "4", "bands": "2", "data type": "2", "interleave": "bsq"}
    for _ in range(draw(st.integers(1, 5))):
        key = draw(st.sampled_from(ENVI_KEYS))
        if key == "interleave":
            fields[key] = draw(st.sampled_from(["bsq", "bil", "bip", "BIP", "xyz", "", "{bsq}"]))
        elif key in ("band names", "wavelength"):
            items = draw(st.lists(st.sampled_from(HOSTILE_NUMBERS + ["a", "b"]), max_size=4))
            fields[key] = "{" + ", ".join(items) + draw(st.sampled_from(["}", "}", ""]))
        else:
            fields[key] = draw(st.sampled_from(HOSTILE_NUMBERS))
    first = draw(st.sampled_from(["ENVI", "ENVI", "ENVI", "envi ", "", "ENV"]))
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    return f"{first}\n{body}\n"


def _implied_size(hdr: str) -> int:
    """|offset + samples × lines × bands × itemsize| as the header states it (0 when unparsable)."""
    fields = dict(line.split(" = ", 1) for line in hdr.splitlines() if " = " in line)
    try:
        n = int(fields.get("header offset", "0"))
        n += int(fields["samples"]) * int(fields["lines"]) * int(fields["bands"]) * {
            1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 6: 8, 9: 16, 12: 2, 13: 4, 14: 8, 15: 8}.get(int(fields["data type"]), 1)
    except (KeyError, ValueError):
        return 0
    return abs(n) if abs(n) <= 4096 else 0


@FUZZ
@given(hdr=envi_header(), size=st.sampled_from([-1, -1, -1, 0, 1, 24, 47, 48, 96, 192]))
def test_fuzz_envi_generated_header(hdr: str, size: int) -> None:
    """``size`` -1: the data file has the size the header implies (negative dimensions made positive)."""
    size = _implied_size(hdr) if size < 0 else size
    check("cube.hdr", hdr, _read_cube_and_labels, extra={"cube.img": bytes(i % 251 for i in range(size))})


# --------------------------------------------------------------------------------------------
# configs and catalog YAML


def _config_keys() -> tuple[list[str], dict[str, list[str]]]:
    import dataclasses

    from geolesf.config import TrainConfig

    top = [f.name for f in dataclasses.fields(TrainConfig)]
    sections = {f.name: [g.name for g in dataclasses.fields(f.type if isinstance(f.type, type) else
                                                                  type(f.default_factory()))]
                for f in dataclasses.fields(TrainConfig) if f.default_factory is not dataclasses.MISSING}
    return top, sections


def _load_config(path: Path) -> None:
    from geolesf.config import TrainConfig, load_config

    load_config(TrainConfig, path)


@FUZZ
@given(data=from_seed("config"))
def test_fuzz_config_mutated(data: bytes) -> None:
    check("run.yaml", data, _load_config)


@st.composite
def config_with_wrong_values(draw: st.DrawFn) -> str:
    """The default config with 1..4 values replaced by hostile YAML scalars (wrong types, bad numbers)."""
    from geolesf.config import TrainConfig, to_dict

    data = to_dict(TrainConfig())
    lines = yaml.safe_dump(data).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.sampled_from([i for i, ln in enumerate(lines) if ":" in ln]))
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}: {draw(yaml_scalar())}"
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(st.deferred(lambda: yaml_text(*_config_keys())), config_with_wrong_values()))
def test_fuzz_config_generated(text: str) -> None:
    check("run.yaml", text, _load_config)


def _load_catalog_file(path: Path) -> None:
    from geolesf.data.catalog import load_file

    load_file(path)


CATALOG_KEYS = ["name", "title", "modality", "sensor", "files", "bands", "classes", "licence", "citation",
                "download", "local", "class_remap", "loader", "homepage", "description"]
CATALOG_SECTIONS = {"bands": ["count", "wavelengths_nm", "range_nm"], "download": ["allowed", "note"],
                    "local": ["data_dirs", "embedded"], "class_remap": ["1", "2"]}


@FUZZ
@given(data=from_seed("catalog"))
def test_fuzz_catalog_mutated(data: bytes) -> None:
    check("landsat7_rgb.yaml", data, _load_catalog_file)


@st.composite
def catalog_text(draw: st.DrawFn) -> str:
    text = draw(yaml_text(CATALOG_KEYS, CATALOG_SECTIONS))
    if draw(st.booleans()):  # a mostly valid entry with one hostile file record
        value = draw(yaml_scalar())
        text = ("name: fuzz\nmodality: hyperspectral\nfiles:\n"
                f"  - name: {draw(st.sampled_from(['a.mat', '../x', '/abs', value]))}\n"
                f"    sha256: {draw(st.sampled_from(['null', 'abc', '0' * 64, value]))}\n"
                f"    size: {draw(yaml_scalar())}\n"
                f"    urls: [{draw(yaml_scalar())}]\n"
                f"    checksums: {{md5: {draw(yaml_scalar())}}}\n") + text
    return text


@FUZZ
@given(text=catalog_text())
def test_fuzz_catalog_generated(text: str) -> None:
    check("fuzz.yaml", text, _load_catalog_file)


# --------------------------------------------------------------------------------------------
# resume state


def _load_state(path: Path) -> None:
    from geolesf.predict.resume import load_state

    load_state(path, "f" * 64)


@FUZZ
@given(data=from_seed("resume"))
def test_fuzz_resume_state(data: bytes) -> None:
    check("state.npz", data, _load_state)


# --------------------------------------------------------------------------------------------
# checkpoints


def _read_checkpoint(path: Path) -> None:
    from geolesf.registry import read_checkpoint

    read_checkpoint(path)


@FUZZ
@given(data=st.one_of(from_seed("unet"), from_seed("patch")))
def test_fuzz_checkpoint_bytes(data: bytes) -> None:
    check("model.pt", data, _read_checkpoint)


HOSTILE_VALUES: list[Any] = [None, "x", "", -1, 0, 10**20, 1.5, float("nan"), [], {}, [1, "a"], {"a": 1},
                             True, (1, 2)]


@st.composite
def malformed_payload(draw: st.DrawFn, seed: str, state_keys: tuple[str, ...] = ("state_dict",),
                      pinned: dict[str, Any] | None = None) -> bytes:
    """The seed checkpoint's payload with keys dropped or replaced by values of the wrong type.

    ``arg`` changes one entry of a nested dict (``model_args`` unless the drawn key is another dict, such
    as a method's settings); ``state`` replaces a tensor of one of ``state_keys`` (the dicts of weights)
    by one of the wrong shape or value. ``pinned`` model arguments (the size of a model: a CLIP or SAM
    variant) are never changed and are restored whenever ``model_args`` is still a dict, so the fuzz
    never builds a full-size network.
    """
    import io

    import torch

    pinned = dict(pinned or {})
    payload = torch.load(io.BytesIO(_seed(seed)), map_location="cpu", weights_only=True)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(payload)))
        op = draw(st.sampled_from(["drop", "value", "value", "arg", "state", "tensor"]))
        if op == "drop":
            payload.pop(key)
        elif op == "value":
            payload[key] = draw(st.sampled_from(HOSTILE_VALUES))
        elif op == "arg":
            target = key if isinstance(payload.get(key), dict) and key not in state_keys else "model_args"
            if isinstance(payload.get(target), dict):
                names = sorted(str(k) for k in payload[target] if k not in pinned or target != "model_args")
                arg = draw(st.sampled_from(names + ["bogus"]))
                # Only small values: a huge depth or width makes the constructor run for hours (not a reader bug).
                payload[target][arg] = draw(st.sampled_from([None, "x", -1, 0, 1, 3, 2.5, [3]]))
        elif op == "state":
            dicts = [k for k in state_keys if isinstance(payload.get(k), dict) and payload[k]]
            if dicts:
                weights = payload[draw(st.sampled_from(dicts))]
                name = draw(st.sampled_from(sorted(weights)))
                old = weights[name]
                wrong = torch.zeros(*old.shape[:-1], old.shape[-1] + 1) if getattr(old, "ndim", 0) else torch.zeros(2)
                weights[name] = draw(st.sampled_from([torch.zeros(1), torch.zeros(2, 3, 1, 1),
                                                      torch.tensor(float("nan")), wrong]))
        elif op == "tensor":
            payload[key] = draw(st.sampled_from([torch.zeros(0), torch.zeros(5), torch.zeros(2, 2),
                                                 torch.tensor(1.0), torch.zeros(2, dtype=torch.int64)]))
    if pinned and isinstance(payload.get("model_args"), dict):
        payload["model_args"].update(pinned)
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def payloads(seed: str, **kwargs: Any) -> st.SearchStrategy[bytes]:
    """Malformed payloads and mutated bytes of a checkpoint seed."""
    return st.one_of(st.deferred(lambda: malformed_payload(seed, **kwargs)), from_seed(seed))


def _load_predict_model(path: Path) -> None:
    from geolesf.predict.model import load_predict_model

    load_predict_model(path)


def check_checkpoint(name: str, data: bytes, method: str) -> None:
    """``data`` as checkpoint ``name`` through the method's ``checkpoint.load`` and through ``load_predict_model``."""
    from geolesf.formats import method_module

    check(name, data, method_module(method, "checkpoint").load)
    check(name, data, _load_predict_model)


@FUZZ
@given(data=payloads("unet"))
def test_fuzz_unet_checkpoint(data: bytes) -> None:
    check_checkpoint("model.pt", data, "unet")


@FUZZ
@given(data=payloads("patch"))
def test_fuzz_hsi_checkpoint(data: bytes) -> None:
    check_checkpoint("model.pt", data, "hsi")


def test_unhashable_checkpoint_format(tmp_path: Path) -> None:
    import torch

    torch.save({"format": ["geolesf-segmentation/1"]}, tmp_path / "model.pt")
    try:
        _load_predict_model(tmp_path / "model.pt")
    except GeolesfError:
        pass


# --------------------------------------------------------------------------------------------
# method checkpoints: wsss, wsod, hclip, sam (tiny models, each seed built once per module)


def _seed_wsss(root: Path) -> None:
    import torch

    from geolesf.methods.wsss.checkpoint import WSSSBundle, save
    from geolesf.registry import create_model

    torch.manual_seed(0)
    args = {"num_classes": 2, "backbone": "simple", "width": 4, "depth": 2}
    save(root / "wsss.pt", WSSSBundle(
        method="cam", model=create_model("cam", **args).eval(), model_args=args,
        class_names=["background", "a", "b"], class_ids=[0, 1, 2], colors=["#000000", "#ff0000", "#00ff00"],
        background=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
        cam={"bg_threshold": 0.3, "scales": [1.0], "flip": True, "margin": 0.1, "pool": "gap"}))
    SEEDS["wsss"] = (root / "wsss.pt").read_bytes()


def _seed_wsod(root: Path) -> None:
    import torch

    from geolesf.methods.wsod.checkpoint import save
    from geolesf.methods.wsod.train import WSODConfig, WSODModelConfig
    from geolesf.registry import create_model

    torch.manual_seed(0)
    tiny = {"backbone": "tiny", "width": 8, "hidden": 16}
    save(root / "ndi.pt", create_model("ndi-wsod", num_classes=2, **tiny), WSODConfig(model=WSODModelConfig(args=tiny)),
         ["a", "b"])
    SEEDS["wsod"] = (root / "ndi.pt").read_bytes()


HCLIP_TINY: dict[str, Any] = dict(tiny=True, block_size=16, hidden=32, guidance_dim=16, text_guidance_dim=16,
                                  decoder_dims=(16, 8), decoder_guidance_dims=(16, 8))


def _seed_hclip(root: Path) -> None:
    import torch

    from geolesf.methods.hclip.checkpoint import save
    from geolesf.registry import create_model

    torch.manual_seed(0)
    save(root / "hclip.pt", create_model("hclip", **HCLIP_TINY), HCLIP_TINY, ["a", "b"])  # random init: no download
    SEEDS["hclip"] = (root / "hclip.pt").read_bytes()


def _seed_sam(root: Path) -> None:
    import torch

    from geolesf.methods.sam import build_sam_model, save_sam_checkpoint
    from geolesf.methods.sam.checkpoint import save
    from geolesf.registry import create_model

    torch.manual_seed(0)
    base = root / "sam_tiny.pth"
    save_sam_checkpoint(build_sam_model("tiny"), base)
    args = {"variant": "tiny", "host": "lora", "mode": "semantic", "num_classes": 2}
    save(root / "peft.pt", create_model("sam-cobo", checkpoint=str(base), **args), model_name="sam-cobo",
         model_args=args, base_checkpoint=base, band_lo=np.zeros(3), band_hi=np.full(3, 255.0), class_ids=[0, 1],
         class_names=["background", "building"], colors=[(0, 0, 0), (200, 30, 30)], extra={"crop": 64})
    SEEDS["sam"] = (root / "peft.pt").read_bytes()


def _seed_spectrum(root: Path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier

    from geolesf.methods.hsi.spectrum import SpectrumCheckpoint, save

    x = np.random.default_rng(0).random((40, 5))
    pca = PCA(3, random_state=0).fit(x)
    forest = RandomForestClassifier(3, random_state=0).fit(pca.transform(x), [0, 1, 2, 3] * 10)
    save(root / "rf.pt", SpectrumCheckpoint(
        estimator=forest, model_name="rf", model_args={"n_estimators": 3}, band_mean=x.mean(0), band_std=x.std(0),
        pca=pca, class_ids=[1, 2, 5, 7], class_names=["a", "b", "c", "d"], colors=[[1, 2, 3]] * 4,
        extra={"split": "random"}, in_chans=5))
    SEEDS["spectrum"] = (root / "rf.pt").read_bytes()


METHOD_SEEDS: dict[str, Callable[[Path], None]] = {"wsss": _seed_wsss, "wsod": _seed_wsod, "hclip": _seed_hclip,
                                                    "sam": _seed_sam, "spectrum": _seed_spectrum}


@pytest.fixture(scope="module")
def cached_clip_tokenizer() -> Any:
    """open_clip's tokenizer built once (reading its BPE vocabulary is most of a tiny hclip's build time)."""
    import functools

    import open_clip

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(open_clip, "get_tokenizer", functools.lru_cache(maxsize=None)(open_clip.get_tokenizer))
        yield


@FUZZ
@given(data=payloads("wsss"))
def test_fuzz_wsss_checkpoint(data: bytes) -> None:
    check_checkpoint("model.pt", data, "wsss")


@FUZZ
@given(data=payloads("wsod"))
def test_fuzz_wsod_checkpoint(data: bytes) -> None:
    check_checkpoint("ndi.pt", data, "wsod")


@FUZZ
@given(data=payloads("hclip", state_keys=("state_dict", "clip_state"), pinned={"tiny": True}))
def test_fuzz_hclip_checkpoint(data: bytes, cached_clip_tokenizer: Any) -> None:
    check_checkpoint("hclip.pt", data, "hclip")


@FUZZ
@given(data=payloads("sam", state_keys=("trainable",), pinned={"variant": "tiny"}))
def test_fuzz_sam_checkpoint(data: bytes) -> None:
    check_checkpoint("peft.pt", data, "sam")


@FUZZ
@given(data=payloads("spectrum", state_keys=()))
def test_fuzz_spectrum_checkpoint(data: bytes) -> None:
    from geolesf.methods.hsi.spectrum import load

    check("model.pt", data, load)
    check("model.pt", data, _load_predict_model)
