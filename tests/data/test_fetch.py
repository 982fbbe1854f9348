"""Downloads against a loopback HTTP server (127.0.0.1 only) serving real files from a temp folder."""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from geolesf.data import catalog
from geolesf.data import fetch as fetch_module
from geolesf.data.fetch import DownloadChecksumError, download, fetch
from geolesf.errors import ChecksumError, FetchError

DASE_SHA = "af3afc51074b934d8f288c788fd294c3588592755d0b1181714f4928c5150e51"


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.root``; honours ``Range: bytes=N-`` unless ``server.honour_range`` is off."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        # The client can return (and the test read ``server.requests``) as soon as the last body
        # byte reaches it, before this thread has stored ``record["sent"]``; so every request is
        # counted as in flight until its handler has finished, and ``LoopbackServer.requests``
        # waits for that (``LoopbackServer.wait_idle``).
        with self.server.in_flight:
            self.server.pending += 1
        try:
            self._serve()
        finally:
            with self.server.in_flight:
                self.server.pending -= 1
                self.server.in_flight.notify_all()

    def _serve(self) -> None:
        server = self.server
        rng = self.headers.get("Range")
        path = server.root / self.path.split("?")[0].lstrip("/")
        record = {"path": self.path, "range": rng, "status": 404, "sent": 0}
        server.requests.append(record)
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start = 0
        if rng and server.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(match.group(1))
            if start >= len(data):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            record["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            record["status"] = 200
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if server.cut_after is not None:  # simulate a dropped connection
            body = body[: server.cut_after]
            server.cut_after = None
            self.close_connection = True
        self.wfile.write(body)
        record["sent"] = len(body)

    def log_message(self, *args) -> None:
        pass


class LoopbackServer:
    def __init__(self, root: Path) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
        self.httpd.root = root
        self.httpd.requests = []
        self.httpd.honour_range = True
        self.httpd.cut_after = None
        self.httpd.pending = 0
        self.httpd.in_flight = threading.Condition()
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self) -> list[dict]:
        """The requests served so far, read only once every handler has finished writing its response."""
        self.wait_idle()
        return self.httpd.requests

    def wait_idle(self, timeout: float = 30.0) -> None:
        with self.httpd.in_flight:
            if not self.httpd.in_flight.wait_for(lambda: self.httpd.pending == 0, timeout=timeout):
                raise AssertionError(f"loopback server: {self.httpd.pending} handler(s) still running after {timeout} s")

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(shared_data: Path, tmp_path: Path) -> Iterator[tuple[LoopbackServer, bytes]]:
    """A loopback server whose folder holds the real DASE mask ``indianpines_ts.tif``."""
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(shared_data / "indian_pines" / "indianpines_ts.tif", root)
    with LoopbackServer(root) as server:
        yield server, (root / "indianpines_ts.tif").read_bytes()


def test_full_download_checks_sha256(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "out" / "indianpines_ts.tif"
    found = download(server.url("indianpines_ts.tif"), dest, size=len(payload), sha256=DASE_SHA, progress=False)
    assert found == DASE_SHA == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert not dest.with_name(dest.name + ".part").exists()
    assert server.requests == [{"path": "/indianpines_ts.tif", "range": None, "status": 200, "sent": len(payload)}]


def test_resume_requests_only_the_remaining_bytes(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "indianpines_ts.tif"
    have = 9_000
    dest.with_name(dest.name + ".part").write_bytes(payload[:have])
    download(server.url("indianpines_ts.tif"), dest, size=len(payload), sha256=DASE_SHA, progress=False)
    assert dest.read_bytes() == payload
    assert len(server.requests) == 1
    assert server.requests[0]["range"] == f"bytes={have}-"
    assert server.requests[0]["status"] == 206
    assert server.requests[0]["sent"] == len(payload) - have


def test_dropped_connection_keeps_the_part_and_resumes(served, tmp_path: Path, monkeypatch) -> None:
    server, payload = served
    monkeypatch.setattr(fetch_module, "CHUNK", 1024)
    server.httpd.cut_after = 5_000
    dest = tmp_path / "indianpines_ts.tif"
    part = dest.with_name(dest.name + ".part")
    with pytest.raises(FetchError, match="run again to resume"):
        download(server.url("indianpines_ts.tif"), dest, size=len(payload), sha256=DASE_SHA, progress=False)
    kept = part.stat().st_size
    assert not dest.exists() and 0 < kept <= 5_000  # whole chunks received before the drop are kept
    assert part.read_bytes() == payload[:kept]
    download(server.url("indianpines_ts.tif"), dest, size=len(payload), sha256=DASE_SHA, progress=False)
    assert dest.read_bytes() == payload and not part.exists()
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert server.requests[-1]["sent"] == len(payload) - kept


def test_complete_part_is_verified_without_a_request(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "indianpines_ts.tif"
    dest.with_name(dest.name + ".part").write_bytes(payload)
    download(server.url("indianpines_ts.tif"), dest, size=len(payload), sha256=DASE_SHA, progress=False)
    assert dest.read_bytes() == payload and server.requests == []


def test_server_ignoring_range_restarts_cleanly(served, tmp_path: Path) -> None:
    server, payload = served
    server.httpd.honour_range = False
    dest = tmp_path / "indianpines_ts.tif"
    dest.with_name(dest.name + ".part").write_bytes(b"stale bytes from elsewhere")
    download(server.url("indianpines_ts.tif"), dest, sha256=DASE_SHA, progress=False)
    assert dest.read_bytes() == payload


def test_checksum_mismatch_leaves_nothing(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "indianpines_ts.tif"
    with pytest.raises(FetchError, match="sha256") as info:
        download(server.url("indianpines_ts.tif"), dest, sha256="0" * 64, progress=False)
    assert isinstance(info.value, ChecksumError) and isinstance(info.value, DownloadChecksumError)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_size_mismatch_is_refused(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "indianpines_ts.tif"
    with pytest.raises(DownloadChecksumError, match="size"):
        download(server.url("indianpines_ts.tif"), dest, size=len(payload) + 1, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_http_404_is_a_fetch_error(served, tmp_path: Path) -> None:
    server, _ = served
    dest = tmp_path / "nope.mat"
    with pytest.raises(FetchError, match="HTTP 404"):
        download(server.url("nope.mat"), dest, progress=False)
    assert not dest.exists()


def test_second_url_is_tried_after_a_404(served, tmp_path: Path) -> None:
    server, payload = served
    dest = tmp_path / "indianpines_ts.tif"
    download([server.url("gone.tif"), server.url("indianpines_ts.tif")], dest, sha256=DASE_SHA, progress=False)
    assert dest.read_bytes() == payload
    assert [r["status"] for r in server.requests] == [404, 200]


def test_offline_mode_refuses_without_network(served, tmp_path: Path, monkeypatch) -> None:
    server, _ = served
    monkeypatch.setenv("GEOLESF_OFFLINE", "1")
    with pytest.raises(FetchError, match="offline"):
        download(server.url("indianpines_ts.tif"), tmp_path / "x.tif", progress=False)
    assert server.requests == []


def test_no_url_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no download URL"):
        download([], tmp_path / "x.tif")


class _NoNetwork:
    def get(self, *args, **kwargs):  # pragma: no cover - must never be called
        raise AssertionError("network used")


def _entry_for(server: LoopbackServer, sha256: str | None, name: str = "dase_mirror") -> catalog.DatasetEntry:
    base = catalog.get_dataset("indian_pines_dase")
    f = base.files[0]
    from dataclasses import replace

    return replace(
        base,
        name=name,
        data_dirs=(),
        embedded=None,
        files=(replace(f, urls=(server.url("indianpines_ts.tif"),), sha256=sha256, note=f.note or "x"),),
    )


def test_fetch_dataset_into_the_data_home(served, tmp_path: Path) -> None:
    server, payload = served
    entry = _entry_for(server, DASE_SHA)
    results = fetch(entry, progress=False)
    target = catalog.data_home() / "dase_mirror" / "indianpines_ts.tif"
    assert [(r.action, r.path, r.verified) for r in results] == [("downloaded", target, True)]
    assert target.read_bytes() == payload
    assert [s.status for s in catalog.verify(entry)] == ["OK"]
    again = fetch(entry, progress=False)  # present and verified: no new request
    assert again[0].action == "present" and len(server.requests) == 1


def test_fetch_without_checksum_reports_the_sha256(served, tmp_path: Path) -> None:
    server, _ = served
    messages: list[str] = []
    results = fetch(_entry_for(server, None), dest=tmp_path / "d", progress=False, log=messages.append)
    assert results[0].sha256 == DASE_SHA and not results[0].verified
    assert any(DASE_SHA in m and "no checksum recorded" in m for m in messages)


def test_fetch_refuses_restricted_datasets() -> None:
    with pytest.raises(FetchError, match="cannot be downloaded automatically.*data request form"):
        fetch("potsdam", session=_NoNetwork())


def test_fetch_without_urls_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="potsdam cannot be downloaded"):
        fetch("potsdam", files=["2_Ortho_RGB.zip"], session=_NoNetwork())
    entry = catalog.get_dataset("voc2012")
    with pytest.raises(FetchError, match="no download URL is known for mmdet_VOCdevkit"):
        fetch(entry, files=["mmdet_VOCdevkit/VOC2007/JPEGImages/000001.jpg"], dest=tmp_path, session=_NoNetwork())
