"""Run the ``geolesf`` executable for the QGIS provider: progress, cancel, errors, no partial output.

QGIS's Python has no torch, so every algorithm runs geolesf as an external program. This module is
plain Python (no ``qgis`` import) so that it can be tested without QGIS; ``feedback`` is anything with
QGIS's ``QgsProcessingFeedback`` methods (``setProgress``, ``setProgressText``, ``isCanceled``,
``pushInfo``, ``pushWarning``, ``pushConsoleInfo``, ``pushCommandInfo``).

- Progress: geolesf draws tqdm bars on stderr (``desc:  42%|████ | 5/12 [...]``, redrawn after ``\\r``).
  Every redraw is parsed; the percentage of the latest bar goes to ``feedback.setProgress`` and its
  description to ``setProgressText``. Other stdout lines go to ``pushInfo``, ``warning: …`` lines to
  ``pushWarning``.
- Cancel: when ``feedback.isCanceled()`` turns true the child gets SIGTERM (CTRL_BREAK on Windows),
  which geolesf turns into ``KeyboardInterrupt`` so that its own cleanup runs (temporary files of
  :mod:`geolesf.io.atomic`, partial GeoTIFFs of the streaming predictor); after ``grace`` seconds it is
  killed. Then every output of the run is removed: the destinations this run wrote (or created) and the
  hidden ``.NAME.*`` files geolesf keeps beside a destination (temporary files, an interrupted
  prediction's resume state) that appeared after the start. :class:`Cancelled` is raised.
- Errors: geolesf prints one ``error: …`` line and exits non-zero; that line is the message of
  :class:`GeolesfRunError`. Without such a line (a crash), the message names the exit status and the
  last stderr line, and the whole stderr goes to ``pushConsoleInfo``.
"""

from __future__ import annotations

import codecs
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(r"(?:(?P<desc>[^|\r\n]*?):\s*)?(?P<pct>\d{1,3})%\|")
NOT_FOUND = ("geolesf executable {exe!r} not found: install geolesf (pip install geolesf) and set its path in "
             "Settings → Options → Processing → Providers → geolesf → 'geolesf executable'")


class GeolesfRunError(Exception):
    """geolesf could not be started or exited with an error; the message is one line for the user."""


class Cancelled(GeolesfRunError):
    """The user cancelled the run; the child is stopped and its outputs removed."""


@dataclass
class RunResult:
    returncode: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def resolve_executable(setting: str | None) -> str:
    """The path of the geolesf executable named by the provider setting (empty: ``geolesf`` on PATH)."""
    name = (setting or "").strip() or "geolesf"
    found = shutil.which(os.path.expanduser(name))
    if found is None:
        raise GeolesfRunError(NOT_FOUND.format(exe=name))
    return found


def child_environment(base: dict | None = None) -> dict:
    """The environment of the child: QGIS's own Python paths removed (they would break geolesf's
    interpreter), unbuffered UTF-8 output, tqdm redraws at most twice a second."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH"):
        env.pop(key, None)
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    env.setdefault("TQDM_MININTERVAL", "0.5")
    return env


def parse_progress(segment: str) -> tuple[str, int] | None:
    """``(description, percent)`` of a tqdm redraw, or None for any other text."""
    m = BAR.search(ANSI.sub("", segment))
    if m is None:
        return None
    return (m.group("desc") or "").strip(), min(100, int(m.group("pct")))


def _reader(stream, name: str, out: queue.Queue) -> None:
    """Split a pipe into segments at ``\\r`` and ``\\n`` (tqdm redraws end with ``\\r``)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        text = decoder.decode(chunk, final=not chunk)
        pending += text
        parts = re.split(r"[\r\n]", pending)
        pending = parts.pop()
        for part in parts:
            out.put((name, part))
        if not chunk:
            break
    if pending:
        out.put((name, pending))
    out.put((name, None))


def _platform_options() -> dict:
    if os.name == "nt":  # a process group of its own, so that CTRL_BREAK reaches only geolesf
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}  # QGIS's own Ctrl-C does not reach the child


def stop(proc: subprocess.Popen, grace: float) -> None:
    """Ask the child to stop (geolesf cleans up on SIGTERM / CTRL_BREAK); kill it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGTERM)
        proc.wait(grace)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait()


def _snapshot(outputs) -> dict[Path, bool]:
    return {Path(p): Path(p).exists() for p in outputs if p}


def remove_outputs(existed: dict[Path, bool], since: float) -> list[Path]:
    """Remove what a failed or cancelled run left: outputs it created or rewrote, hidden ``.NAME.*``
    files newer than ``since`` beside them. Returns the removed paths."""
    removed = []

    def fresh(p: Path) -> bool:
        try:
            return p.stat().st_mtime >= since
        except OSError:
            return False

    for path, was in existed.items():
        if path.parent.is_dir():
            for hidden in path.parent.glob(f".{glob_escape(path.name)}.*"):
                if hidden.is_file() and fresh(hidden):
                    hidden.unlink(missing_ok=True)
                    removed.append(hidden)
        if path.is_dir() and not was:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif path.is_dir():  # a run folder that existed (QGIS creates its temporary folders): new entries
            for entry in path.iterdir():
                if fresh(entry):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                    removed.append(entry)
        elif path.is_file() and (not was or fresh(path)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _relay(feedback, stream: str, line: str, result: RunResult) -> None:
    bar = parse_progress(line)
    if bar is not None:
        desc, pct = bar
        feedback.setProgress(pct)
        if desc:
            feedback.setProgressText(desc)
        return
    line = ANSI.sub("", line).rstrip()
    if not line.strip():
        return
    (result.stdout if stream == "stdout" else result.stderr).append(line)
    if line.startswith("warning: "):
        feedback.pushWarning(line)
    elif stream == "stdout":
        feedback.pushInfo(line)
    elif not line.startswith("error: "):
        feedback.pushConsoleInfo(line)


def error_message(result: RunResult) -> str:
    """geolesf's ``error: …`` line, else the exit status with the last line it printed."""
    errors = [line for line in result.stderr if line.startswith("error: ")]
    if errors:
        return errors[-1]
    last = next((line for line in reversed(result.stderr) if line.strip()), "no output")
    return f"geolesf exited with status {result.returncode}: {last.strip()}"


def run(args: list[str], feedback, *, executable: str | None = None, outputs=(), grace: float = 20.0,
        env: dict | None = None) -> RunResult:
    """Run ``geolesf ARGS``, relaying progress and messages to ``feedback``; see the module docstring.

    ``outputs``: every path the run writes (files, sidecars, a run folder), removed again when the run
    fails or is cancelled. Raises :class:`Cancelled` or :class:`GeolesfRunError`.
    """
    exe = resolve_executable(executable)
    feedback.pushCommandInfo(" ".join([exe, *args]))
    existed = _snapshot(outputs)
    since = time.time() - 1.0  # file time stamps may be coarser than the clock
    try:
        proc = subprocess.Popen([exe, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_environment(env), **_platform_options())
    except OSError as exc:
        raise GeolesfRunError(f"cannot start {exe}: {exc.strerror or exc}") from None
    lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_reader, args=(s, n, lines), daemon=True)
               for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for t in readers:
        t.start()
    result, open_streams = RunResult(returncode=-1), 2
    try:
        while open_streams:
            if feedback.isCanceled():
                stop(proc, grace)
                remove_outputs(existed, since)
                raise Cancelled("geolesf run cancelled; its partial outputs were removed")
            try:
                stream, line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
            else:
                _relay(feedback, stream, line, result)
        result.returncode = proc.wait()
    finally:
        stop(proc, grace)
        for t in readers:
            t.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    if result.returncode != 0:
        remove_outputs(existed, since)
        raise GeolesfRunError(error_message(result))
    return result
