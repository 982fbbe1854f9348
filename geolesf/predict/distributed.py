"""Tiled prediction of many scenes on a dask.distributed cluster, byte-identical to one process.

Each scene is cut into parts of ``part_rows`` output rows (a multiple of the COG block size). A
part is one dask task: it opens the scene on the worker, runs :func:`geolesf.predict.parts.predict_rows`
(the single-process predictor's loop, recomputing the tile rows that overlap the part's first
band so its rows get exactly the same float32 additions) and returns its class ids (and
probabilities). The driver writes every part into the scene's temporary tiled GeoTIFF as it
arrives — each part covers whole blocks, so every block is written once — and turns the scene
into a Cloud-Optimized GeoTIFF with the same colour table, class names, tags, overviews and QGIS
style as :func:`geolesf.predict.tiled.predict_raster`. The result is the same bytes.

* Many scenes run at once: all parts are submitted together; earlier scenes have higher
  priority, so scenes finish (and are assembled) one after another while later ones compute.
* Failures: a task that raises is retried ``retries`` times; a task on a worker that dies is
  rescheduled by dask. Tasks are pure functions of (scene, model, plan, rows), so a retry gives
  identical bytes. If a part still fails, unfinished scenes leave nothing at their destination.
* Progress: a tqdm bar on the driver (``as_completed``) and the dask dashboard, whose link is
  printed (the dashboard needs ``bokeh`` on the scheduler).
* ``workers=N`` starts a ``LocalCluster`` of N single-threaded worker processes (default: one per
  CPU core, or one with a CUDA device); ``scheduler`` connects to an existing one
  (``tcp://host:8786``). Workers must be able to read the scene and checkpoint at the same paths
  (a shared filesystem: scenes are opened by :class:`geolesf.predict.sources.RasterioSource`,
  which takes local paths); only the driver writes.

Not supported here (use the single-process predictor): ``resume`` (a re-run recomputes, parts
are the unit of retry), in-memory array sources, previews.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geolesf.errors import ConfigError, DataError, GeolesfError, ModelError
from geolesf.io import cog as _cog
from geolesf.io.atomic import output_lock
from geolesf.predict.model import PredictModel, as_predict_model
from geolesf.predict.options import TilingOptions, check_inputs, output_dtype
from geolesf.predict.output import (
    check_destinations,
    check_free_space,
    finalize_cogs,
    open_temps,
    scene_tags,
    write_style,
)
from geolesf.predict.parts import (
    PartOutput,
    RowPlan,
    default_part_rows,
    predict_rows,
    split_rows,
)


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint that each worker loads once (and keeps) instead of receiving the weights."""

    path: str
    model_name: str | None
    options: tuple[tuple[str, str], ...]
    sha256: str


@dataclass
class DistributedResult:
    out: Path
    probabilities: Path | None
    height: int
    width: int
    parts: int
    tiles: int
    tiles_computed: int
    tiles_skipped: int
    read_seconds: float
    forward_seconds: float
    part_seconds: float
    """Sum of the parts' task times (worker seconds)."""
    part_cpu_seconds: float
    """Sum of the parts' CPU times (less than ``part_seconds`` when the cores are shared)."""
    assemble_seconds: float
    """Driver time writing parts and building the COG."""
    workers: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# worker side

_MODELS: dict[CheckpointRef, PredictModel] = {}


def _worker_model(model: CheckpointRef | PredictModel) -> PredictModel:
    if isinstance(model, PredictModel):
        return model
    if model not in _MODELS:
        from geolesf.predict.model import load_predict_model

        pm = load_predict_model(model.path, model.model_name, {k: v for k, v in model.options})
        pm = as_predict_model(pm)
        if model.sha256 and pm.sha256 and pm.sha256 != model.sha256:
            raise ModelError(f"{model.path}: the worker's copy has sha256 {pm.sha256[:12]}…, the driver's "
                             f"{model.sha256[:12]}…; workers must see the same checkpoint")
        _MODELS.clear()  # keep one model per worker process
        _MODELS[model] = pm
    return _MODELS[model]


def run_part(model: CheckpointRef | PredictModel, scene: str, plan: RowPlan, row0: int, row1: int) -> PartOutput:
    """The dask task: rows ``[row0, row1)`` of ``scene``.

    The worker pins glibc's mmap threshold for its model's kind, as the single-process predictor does
    (``GEOLESF_MMAP_THRESHOLD`` in the worker's environment overrides it, see
    :mod:`geolesf.predict.batching`): for dense models each worker's peak memory is then one batch's
    live memory in every run; patch models reuse their batch memory in the heap.
    """
    from geolesf.predict.batching import pin_mmap_threshold
    from geolesf.predict.sources import open_source

    pm = _worker_model(model)
    pin_mmap_threshold(kind=pm.kind)
    src = open_source(scene, plan.nodata)
    try:
        out = predict_rows(src, pm, plan, row0, row1)
    finally:
        src.close()
    out.worker = f"{socket.gethostname()}:{os.getpid()}"
    return out


# --------------------------------------------------------------------------------------------
# cluster


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, dashboard: str | None = ":8787",
                quiet: bool = False) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler``, or to a new ``LocalCluster`` of
    ``workers`` single-threaded processes (closed on exit). Prints the dashboard link."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler and workers:
        raise ConfigError("--scheduler and --workers exclude each other: give one")
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    else:
        n = int(workers if workers is not None else 1)
        if n < 1:
            raise ConfigError(f"--workers must be at least 1, found {n}")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=dashboard, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        if not quiet:
            link = client.dashboard_link if _has_dashboard(client) else "not served"
            if cluster is not None and importlib.util.find_spec("bokeh") is None:
                link = f"{link} — not available: the dashboard needs bokeh (pip install bokeh)"
            print(f"dask: {len(client.scheduler_info().get('workers', {}))} workers at "
                  f"{client.scheduler.address}; dashboard: {link}", file=sys.stderr)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _has_dashboard(client: Any) -> bool:
    services = client.scheduler_info().get("services", {})
    return "dashboard" in services


# --------------------------------------------------------------------------------------------
# driver


@dataclass
class _Scene:
    scene: Path
    out: Path
    probs: Path | None
    plan: RowPlan
    parts: list[tuple[int, int]]
    tags: dict[str, str]
    paths: _cog.PartialPaths
    done: int = 0
    tiles_computed: int = 0
    tiles_skipped: int = 0
    read_s: float = 0.0
    forward_s: float = 0.0
    part_s: float = 0.0
    cpu_s: float = 0.0
    assemble_s: float = 0.0
    workers: set[str] = field(default_factory=set)
    crs: Any = None
    transform: Any = None
    dst: Any = None
    """Open temporary GeoTIFFs (class ids, probabilities) from the first part to the last."""
    dstp: Any = None

    def close(self) -> None:
        for name in ("dst", "dstp"):
            ds = getattr(self, name)
            if ds is not None and not ds.closed:
                ds.close()
            setattr(self, name, None)


def _prepare(scene: Path, out: Path, probs: Path | None, pm: PredictModel, opts: TilingOptions,
             part_rows: int | None) -> _Scene:
    """Checks and plan of one scene (as :func:`predict_raster` does before any work)."""
    from geolesf.predict.sources import open_source

    check_destinations(scene, out, probs)
    src = open_source(scene, opts.nodata)
    try:
        check_inputs(src, pm, opts.tile)
        H, W, name, crs, transform = src.height, src.width, src.name, src.crs, src.transform
    finally:
        src.close()
    opts = opts.for_model(pm)
    out_dtype, nodata_out = output_dtype(pm.class_ids, opts.out_nodata)
    plan = opts.row_plan(H, W, want_probs=probs is not None, out_dtype=out_dtype, nodata_out=nodata_out)
    check_free_space(out, H, W, out_dtype, len(pm.class_ids) if probs is not None else 0, plan.prob_u8, out.name,
                     probs=probs)
    part_rows = part_rows or default_part_rows(plan, len(pm.class_ids))
    return _Scene(scene=scene, out=out, probs=probs, plan=plan, parts=split_rows(H, opts.block, part_rows),
                  tags=scene_tags(pm, opts, name), paths=_cog.PartialPaths(out, probs), crs=crs, transform=transform)


def _write_part(job: _Scene, part: PartOutput, pm: PredictModel) -> None:
    """Whole blocks of rows ``[row0, row1)`` into the scene's temporary GeoTIFF(s)."""
    from rasterio.windows import Window

    if job.dst is None:
        # kept open until the scene's last part (closing earlier would make GDAL fill unwritten blocks)
        job.dst, job.dstp = open_temps(job.paths, job.plan, pm, job.crs, job.transform, job.tags)
    win = Window(0, part.row0, job.plan.width, part.row1 - part.row0)
    job.dst.write(part.ids, 1, window=win)
    if part.probs is not None:
        for b in range(part.probs.shape[0]):
            job.dstp.write(part.probs[b], b + 1, window=win)


def _finish(job: _Scene, pm: PredictModel, overview_resampling: str, qml: bool) -> None:
    job.close()
    finalize_cogs(job.paths, job.plan, overview_resampling)
    write_style(job.out, pm, qml)


def _model_ref(model: Any, model_name: str | None, options: dict[str, Any] | None,
               class_names: Sequence[str] | None, colors: Sequence[Any] | None) -> tuple[PredictModel, Any]:
    """The driver's PredictModel (metadata, checks) and what the tasks receive."""
    if isinstance(model, (str, Path)):
        if class_names is not None or colors is not None:
            raise ConfigError("class_names/colors: give them with an nn.Module, not a checkpoint (it has its own)")
        from geolesf.predict.model import load_predict_model

        pm = as_predict_model(load_predict_model(model, model_name, options))
        ref = CheckpointRef(str(Path(model).resolve()) if Path(model).exists() else str(model), model_name,
                            tuple(sorted((str(k), v) for k, v in (options or {}).items())), pm.sha256)
        return pm, ref
    pm = as_predict_model(model, class_names=class_names, colors=colors)
    return pm, pm


def predict_distributed(
    scenes: Sequence[str | Path],
    model: Any,
    outs: Sequence[str | Path],
    *,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    probabilities: Sequence[str | Path] | None = None,
    tile: int = 512,
    overlap: int = 64,
    blend: str = "cosine",
    batch_size: int = 16,
    margin: int | None = None,
    blend_on: str = "probabilities",
    probabilities_dtype: str = "float32",
    nodata: float | None = None,
    out_nodata: int | None = None,
    block: int = 512,
    device: str = "cpu",
    pixel_batch: int = 4096,
    part_rows: int | None = None,
    retries: int = 3,
    overview_resampling: str = "nearest",
    qml: bool = True,
    progress: bool = True,
    model_name: str | None = None,
    options: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    memory_format: str = "auto",
) -> list[DistributedResult]:
    """Predict every scene of ``scenes`` into ``outs`` on dask workers; same bytes as
    :func:`geolesf.predict.tiled.predict_raster` with the same options.

    ``model``: a checkpoint path / ``MODEL:TAG`` (each worker loads it once), or a
    :class:`PredictModel` / ``nn.Module`` (sent to the workers once). ``client``: an existing
    ``distributed.Client``; otherwise ``scheduler`` (address) or ``workers`` (local processes).
    ``part_rows``: output rows per task, a multiple of ``block`` (default about four tiles).
    """
    scenes = [Path(s) for s in scenes]
    outs = [Path(p) for p in outs]
    probs = [Path(p) for p in probabilities] if probabilities is not None else [None] * len(scenes)
    if not scenes:
        raise ConfigError("no scenes given")
    if len(outs) != len(scenes) or len(probs) != len(scenes):
        raise ConfigError(f"{len(scenes)} scenes but {len(outs)} outputs / {len(probs)} probability outputs")
    dests = [p.resolve() for p in outs + [p for p in probs if p is not None]]
    if len(set(dests)) != len(dests):
        raise ConfigError("two scenes would write the same output file; give distinct outputs")
    opts = TilingOptions(tile=tile, overlap=overlap, blend=blend, margin=margin, blend_on=blend_on,
                         batch_size=batch_size, pixel_batch=pixel_batch, probabilities_dtype=probabilities_dtype,
                         nodata=nodata, out_nodata=out_nodata, block=block, device=device, memory_format=memory_format)
    pm, ref = _model_ref(model, model_name, options, class_names, colors)
    # One run per destination at a time (the partial files have fixed names beside each output).
    with output_lock(*outs, *[p for p in probs if p is not None]):
        jobs = [_prepare(s, d, p, pm, opts, part_rows) for s, d, p in zip(scenes, outs, probs)]
        finish = functools.partial(_finish, pm=pm, overview_resampling=overview_resampling, qml=qml)
        if client is None:
            if workers is None and scheduler is None:
                workers = 1 if str(device).startswith("cuda") else (os.cpu_count() or 1)
            with dask_client(workers=workers, scheduler=scheduler, quiet=not progress) as c:
                return _execute(c, jobs, pm, ref, finish, retries, progress)
        return _execute(client, jobs, pm, ref, finish, retries, progress)


def _execute(client: Any, jobs: list[_Scene], pm: PredictModel, ref: Any, finish: Callable[[_Scene], None],
             retries: int, progress: bool) -> list[DistributedResult]:
    import rasterio
    from distributed import as_completed
    from tqdm.auto import tqdm

    run_id = uuid.uuid4().hex[:8]
    model_arg = client.scatter(ref, broadcast=True, hash=False) if isinstance(ref, PredictModel) else ref
    futures: dict[Any, tuple[_Scene, int]] = {}
    for k, job in enumerate(jobs):
        for n, (r0, r1) in enumerate(job.parts):
            fut = client.submit(run_part, model_arg, str(job.scene), job.plan, r0, r1, retries=retries,
                                priority=-k, pure=False, key=f"geolesf-part-{run_id}-{k}-{n}")
            futures[fut] = (job, n)
    finished: set[int] = set()
    bar = tqdm(total=len(futures), unit="part", desc=f"predict {len(jobs)} scene(s)", disable=not progress,
               dynamic_ncols=True)
    env = rasterio.Env(GDAL_CACHEMAX=64)
    env.__enter__()
    try:
        for fut in as_completed(list(futures)):
            job, _ = futures.pop(fut)
            part = fut.result()
            fut.release()
            t0 = time.perf_counter()
            _write_part(job, part, pm)
            job.done += 1
            job.tiles_computed += part.tiles_computed
            job.tiles_skipped += part.tiles_skipped
            job.read_s += part.read_seconds
            job.forward_s += part.forward_seconds
            job.part_s += part.seconds
            job.cpu_s += part.cpu_seconds
            job.workers.add(part.worker)
            if job.done == len(job.parts):
                finish(job)
                finished.add(id(job))
            job.assemble_s += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(scenes=f"{len(finished)}/{len(jobs)}")
    except BaseException as exc:
        for fut in futures:
            fut.cancel()
        for job in jobs:
            if id(job) not in finished:
                job.close()
                job.paths.remove()
        if not isinstance(exc, (GeolesfError, KeyboardInterrupt)) and progress:
            print(f"\ndistributed prediction failed; unfinished outputs removed ({type(exc).__name__})",
                  file=sys.stderr)
        raise
    finally:
        bar.close()
        env.__exit__(None, None, None)
    return [
        DistributedResult(
            out=j.out, probabilities=j.probs, height=j.plan.height, width=j.plan.width, parts=len(j.parts),
            tiles=len(j.plan.rows) * len(j.plan.cols), tiles_computed=j.tiles_computed,
            tiles_skipped=j.tiles_skipped, read_seconds=j.read_s, forward_seconds=j.forward_s,
            part_seconds=j.part_s, part_cpu_seconds=j.cpu_s, assemble_seconds=j.assemble_s, workers=sorted(j.workers),
        )
        for j in jobs
    ]


def scene_outputs(scenes: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """``out_dir/<scene stem>.tif`` for each scene; two scenes with the same stem are refused."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DataError(f"--out-dir {out_dir}: folder does not exist")
    outs = [out_dir / f"{Path(s).stem}.tif" for s in scenes]
    seen: dict[Path, str] = {}
    for s, p in zip(scenes, outs):
        if p in seen:
            raise ConfigError(f"--out-dir: scenes {seen[p]} and {s} would both write {p.name}")
        seen[p] = str(s)
    return outs

