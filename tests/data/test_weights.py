"""The weights catalog: entries, fetch (resume, sha256, pinning, offline) and use by name in configs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from geolesf.cli.main import main
from geolesf.data import weights
from geolesf.data.fetch import DownloadChecksumError
from geolesf.errors import ChecksumError, DataError, FetchError, ModelError
from tests.conftest import EMBEDDED
from tests.data.test_fetch import LoopbackServer

REAL = EMBEDDED / "weights" / "s2mamba_indian_pines_dase.pt"  # a real small checkpoint to serve


def test_catalog_entries_record_what_the_authors_publish():
    entries = weights.load_weights_catalog()
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h", "clip_vit_b16_openai", "clip_vit_l14_openai"} <= set(entries)
    sizes = {"sam_vit_b": 375042383, "sam_vit_l": 1249524607, "sam_vit_h": 2564550879}
    for name, size in sizes.items():
        e = entries[name]
        assert e.size == size and e.sha256 is None and e.licence == "Apache-2.0"
        assert e.urls == (f"https://dl.fbaipublicfiles.com/segment_anything/{e.file}",)
        assert "not published" in e.sha256_note and "Kirillov" in e.citation and "Segment Anything" in e.citation
    for name in ("clip_vit_b16_openai", "clip_vit_l14_openai"):
        e = entries[name]  # OpenAI publishes the sha256 as the URL's second-to-last segment
        assert e.sha256 == e.urls[0].split("/")[-2] and e.urls[0].endswith("/" + e.file)
        assert "Radford" in e.citation and e.used_by.startswith("H-CLIP")


def _catalog(folder: Path, server: LoopbackServer, payload: bytes, **sha) -> Path:
    folder.mkdir(exist_ok=True)
    items = []
    for name, digest in sha.items():
        items.append(f"""  - name: {name}
    title: test weights {name}
    file: {name}.pth
    urls: [{server.url('real.pt')}]
    size: {len(payload)}
    sha256: {repr(digest) if digest else 'null'}
    licence: MIT
    citation: test
""")
    (folder / "test.yaml").write_text("weights:\n" + "".join(items))
    return folder


@pytest.fixture
def served(tmp_path, monkeypatch):
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(REAL, root / "real.pt")
    payload = REAL.read_bytes()
    with LoopbackServer(root) as server:
        sha = hashlib.sha256(payload).hexdigest()
        folder = _catalog(tmp_path / "catalog", server, payload, published=sha, unpublished=None, wrong="0" * 64)
        monkeypatch.setattr(weights, "CATALOG_DIR", folder)
        yield server, payload, sha


def test_fetch_published_resumes_and_is_not_repeated(served, capsys):
    server, payload, sha = served
    e = weights.get_weights("published")
    e.path.parent.mkdir(parents=True)
    e.path.with_name(e.path.name + ".part").write_bytes(payload[:5000])
    assert main(["weights", "fetch", "published", "--no-progress"]) == 0
    assert e.path.read_bytes() == payload and f"sha256={sha}" in capsys.readouterr().out
    assert [r["range"] for r in server.requests] == ["bytes=5000-"]
    assert main(["weights", "fetch", "published"]) == 0  # a verified copy: no request
    assert capsys.readouterr().out.startswith("present") and len(server.requests) == 1
    assert not e.pin_path.exists()  # published checksums are never pinned


def test_sha256_mismatch_is_refused_and_nothing_is_left(served):
    with pytest.raises(DownloadChecksumError, match="corrupt or not the published one"):
        weights.fetch_weights("wrong", progress=False)
    e = weights.get_weights("wrong")
    assert not e.path.exists() and not e.path.with_name(e.path.name + ".part").exists()


def test_unpublished_sha256_is_pinned_on_first_fetch_and_enforced(served, capsys):
    server, payload, sha = served
    assert main(["weights", "fetch", "unpublished", "--no-progress"]) == 0
    assert "pinned (no published sha256)" in capsys.readouterr().out
    e = weights.get_weights("unpublished")
    assert e.pinned() == sha and e.pin_path.read_text().split() == [sha, "unpublished.pth"]
    assert weights.resolve_spec("weights:unpublished") == (e.path, sha)
    data = bytearray(payload)
    data[100] ^= 1  # same size, other content
    e.path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        weights.verify_local(e)
    assert main(["weights", "path", "unpublished"]) == 2
    # fetch replaces the bad copy; the download must match the pin
    assert weights.fetch_weights("unpublished", progress=False).action == "downloaded"
    assert e.path.read_bytes() == payload


def test_offline_refuses_before_any_request(served, monkeypatch):
    server, _, _ = served
    monkeypatch.setenv("GEOLESF_OFFLINE", "1")
    with pytest.raises(FetchError, match="offline mode"):
        weights.fetch_weights("published", progress=False)
    assert server.requests == []


def test_sam_model_by_name_in_config(served, tmp_path, monkeypatch):
    """``model.checkpoint: weights:NAME`` builds SAM from the fetched, pinned file; a PEFT checkpoint
    keeps the name and reloads through it; a changed file is refused."""
    import numpy as np

    from geolesf.methods.sam.build import build_sam_model, save_sam_checkpoint
    from geolesf.methods.sam.checkpoint import load as load_peft_model
    from geolesf.methods.sam.checkpoint import save as save_peft_checkpoint
    from geolesf.registry import create_model

    server, _, _ = served
    torch.manual_seed(0)
    digest = save_sam_checkpoint(build_sam_model("tiny"), server.httpd.root / "real.pt")
    size = (server.httpd.root / "real.pt").stat().st_size
    _catalog(weights.CATALOG_DIR, server, b"x" * size, tiny_sam=None)
    with pytest.raises(ModelError, match=r"weights:tiny_sam: .*run `geolesf weights fetch tiny_sam`|"
                                         r"'tiny_sam' are not fetched .*run `geolesf weights fetch tiny_sam`"):
        create_model("sam-parser", variant="tiny", checkpoint="weights:tiny_sam")
    assert weights.fetch_weights("tiny_sam", progress=False).pinned
    model = create_model("sam-parser", variant="tiny", checkpoint="weights:tiny_sam")
    assert model.base_sha256 == digest
    out = tmp_path / "peft.pt"
    save_peft_checkpoint(out, model, model_name="sam-parser", model_args={"variant": "tiny"},
                         base_checkpoint="weights:tiny_sam", band_lo=np.zeros(3), band_hi=np.full(3, 255.0),
                         class_ids=[1], class_names=["building"], colors=[(200, 30, 30)], extra={})
    assert torch.load(out, weights_only=True)["base_checkpoint"] == "weights:tiny_sam"
    load_peft_model(out)
    path = weights.get_weights("tiny_sam").path
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        create_model("sam-parser", variant="tiny", checkpoint="weights:tiny_sam")


def test_clip_by_name_is_checked_against_the_published_sha256(monkeypatch):
    from geolesf.methods.hclip.backbone import load_clip_state_dict

    with pytest.raises(ModelError, match=r"model\.clip_checkpoint weights:clip_vit_b16_openai: not fetched .*"
                                         r"`geolesf weights fetch clip_vit_b16_openai`"):
        load_clip_state_dict("weights:clip_vit_b16_openai")
    e = weights.get_weights("clip_vit_b16_openai")
    e.path.parent.mkdir(parents=True)
    shutil.copy(REAL, e.path)  # a file of the right name with other content
    assert weights.resolve_spec("weights:clip_vit_b16_openai") == (e.path, e.sha256)
    with pytest.raises(ChecksumError, match="ViT-B-16.pt: sha256 mismatch"):
        load_clip_state_dict("weights:clip_vit_b16_openai")
    with pytest.raises(ModelError, match="the config's sha256 aaaaaaaaaaaaaaaa… differs"):
        weights.resolve_spec("weights:clip_vit_b16_openai", "a" * 64)
    assert weights.resolve_spec("some/file.pth", None) == ("some/file.pth", None)  # paths pass through


def test_wrong_size_and_unknown_names_are_one_line_errors():
    e = weights.get_weights("sam_vit_b")
    e.path.parent.mkdir(parents=True)
    shutil.copy(REAL, e.path)
    with pytest.raises(ModelError, match=r"sam_vit_b_01ec64\.pth: .* bytes, the catalog records 375,042,383"):
        weights.resolve_spec("weights:sam_vit_b")
    with pytest.raises(ModelError, match="unknown weights 'sam_vit_bb'; did you mean 'sam_vit_b'"):
        weights.resolve_spec("weights:sam_vit_bb")


def test_bad_catalog_files_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("weights:\n  - {name: x, title: t, file: f, urls: [ftp://x], licence: l, citation: c}\n")
    with pytest.raises(DataError, match=r"a\.yaml: entry 'x': urls must be http\(s\)"):
        weights.load_weights_catalog(tmp_path)
    (tmp_path / "a.yaml").write_text("weights:\n  - {name: x, title: t, file: f, urls: [], licence: l, citation: c}\n")
    with pytest.raises(DataError, match="lacks 'urls'"):
        weights.load_weights_catalog(tmp_path)
    (tmp_path / "a.yaml").write_text("weights:\n  - {name: x, title: t, file: f, urls: [https://a], licence: l, "
                                     "citation: c, sha256: ABC}\n")
    with pytest.raises(DataError, match="sha256 must be 64 lower-case hex digits"):
        weights.load_weights_catalog(tmp_path)


def test_list_and_info_cli(capsys):
    e = weights.get_weights("clip_vit_b16_openai")
    e.path.parent.mkdir(parents=True)
    e.path.write_bytes(b"x")
    assert main(["weights", "list"]) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "FILE", "SIZE", "LICENCE", "SHA256", "LOCAL"]
    by_name = {r.split()[0]: r.split() for r in rows}
    assert by_name["sam_vit_h"][1:] == ["sam_vit_h_4b8939.pth", "2.56", "GB", "Apache-2.0", "unpublished", "no"]
    assert by_name["clip_vit_b16_openai"][-2:] == ["published", "yes"]
    assert main(["weights", "info", "sam_vit_l"]) == 0
    out = capsys.readouterr().out
    for fragment in ("sam_vit_l_0b3195.pth (1,249,524,607 bytes)", "sha256:    not published: computed on first "
                     "fetch and pinned locally", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                     "licence:   Apache-2.0", "weights:sam_vit_l", "Kirillov"):
        assert fragment in out, fragment
    assert main(["weights", "info", "sam_vit"]) == 2
    assert "unknown weights 'sam_vit'" in capsys.readouterr().err
