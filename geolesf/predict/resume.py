"""Resume state of an interrupted tiled prediction.

At a flush point (rows ``[0, flushed)`` are in the temporary GeoTIFF and closed on disk) the
predictor's whole state is small: the index of the next tile row, the float accumulators of
the rows still receiving contributions (``carry``) and the finished rows not yet written
(``pending``). They are saved with a *fingerprint* of everything that determines the output
(source identity, model weights hash, tile geometry, blending, nodata, output options); a
resume with a different fingerprint is refused. Because the accumulators are restored bit for
bit and the remaining work runs in the same order, a resumed run writes the same bytes as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError

STATE_FORMAT = "geolesf-tiled-resume/1"
_META_KEYS = {"fingerprint", "next_row", "flushed", "carry_start", "tiles_done", "tiles_skipped"}


def fingerprint(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ResumeState:
    fingerprint: str
    next_row: int
    """Index of the next tile row to run."""
    flushed: int
    """Rows ``[0, flushed)`` are written to the temporary GeoTIFF(s)."""
    carry_start: int
    carry: np.ndarray
    """``(C+1, h, W)`` float32 accumulators for rows ``[carry_start, carry_start + h)``."""
    pending_ids: np.ndarray
    """``(rows, W)`` finished class rows ``[flushed, flushed + rows)`` not yet written."""
    pending_probs: np.ndarray | None
    tiles_done: int
    tiles_skipped: int


def save_state(path: Path, state: ResumeState) -> None:
    meta = {
        "format": STATE_FORMAT, "fingerprint": state.fingerprint, "next_row": state.next_row,
        "flushed": state.flushed, "carry_start": state.carry_start, "tiles_done": state.tiles_done,
        "tiles_skipped": state.tiles_skipped,
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), "carry": state.carry,
              "pending_ids": state.pending_ids}
    if state.pending_probs is not None:
        arrays["pending_probs"] = state.pending_probs
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_state(path: Path, expected_fingerprint: str) -> ResumeState:
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            carry = z["carry"]
            pending_ids = z["pending_ids"]
            pending_probs = z["pending_probs"] if "pending_probs" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable resume state ({exc}); delete it and run without --resume") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or not _META_KEYS <= set(meta):
        raise DataError(f"{path}: not a geolesf resume state")
    if meta["fingerprint"] != expected_fingerprint:
        raise DataError(
            f"{path}: the interrupted run used a different scene, model or options; "
            "run without --resume to start again"
        )
    return ResumeState(
        fingerprint=meta["fingerprint"], next_row=meta["next_row"], flushed=meta["flushed"],
        carry_start=meta["carry_start"], carry=carry, pending_ids=pending_ids, pending_probs=pending_probs,
        tiles_done=meta["tiles_done"], tiles_skipped=meta["tiles_skipped"],
    )
