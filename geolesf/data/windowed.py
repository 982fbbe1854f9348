"""Hyperspectral scenes larger than memory: windowed reads, streamed band statistics, patch gathering.

The in-memory hsi path holds the native cube, its float32 copy, the normalised copy and the padded
patch tensor at once (about three float32 copies of the scene). The windowed path holds none of
them: the scene is read in full-width *row bands* of a bounded size (``band_bytes`` of float32
features, default 128 MiB, plus the patch halo) and only what a step needs is kept:

- :class:`RasterWindows` — a raster opened once (rasterio), ``read(r0, r1, c0, c1) -> (h, w, bands)``
  in the file's dtype; the GDAL block cache is capped so that it holds about two block rows.
- :func:`scene_band_stats` — per-band mean and standard deviation over the whole scene in one
  streamed pass (Chan et al.'s pairwise update of count, mean and squared deviations in float64;
  equal to ``numpy.std`` to floating-point tolerance, not bit for bit).
- :class:`FeatureWindows` — raw window → float32 features with the fitted normaliser (and PCA),
  the very operations the in-memory path applies to the whole cube (identical bytes without PCA).
- :class:`WindowedPatches` — ``P×P`` patches (or ``P = 1`` spectra) of any list of pixels, read band
  by band with a halo of the patch radius; at the scene edges the halo is padded with the same
  mode and about the same edge as the whole-scene pad of :class:`geolesf.predict.patches.PatchGatherer`,
  so the patches are identical to the in-memory ones. ``preload`` keeps the patches of a pixel set
  (the training pixels) in memory, refused above :func:`geolesf.io.cube.array_budget`; any other
  pixel is read on demand through a one-band cache (row-major callers read each band once).

Labels stay an in-memory raster on the cube grid (a 4,000² int32 map is 64 MB).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError

#: float32 feature bytes of one row band (the halo rows come on top).
BAND_BYTES = 128 << 20
#: numpy pad modes of the patch paddings (the same as geolesf.predict.patches.PAD_MODES).
PAD_MODES = {"symmetric": "symmetric", "reflect": "reflect", "zero": "constant"}
#: The in-memory path holds about this many float32 copies of the scene at its peak.
IN_MEMORY_COPIES = 3


def windowed_setting(value: Any) -> str:
    """``data.windowed`` as ``auto``, ``true`` or ``false`` (a ConfigError for anything else)."""
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("true", "yes", "1", "on"):
        return "true"
    if text in ("false", "no", "0", "off"):
        return "false"
    raise ConfigError(f"data.windowed must be auto, true or false, found '{value}'")


def use_windowed(data: Any) -> bool:
    """Whether the hsi run reads ``data.cube`` through windows.

    ``auto``: when the in-memory path's float32 copies (:data:`IN_MEMORY_COPIES` × H × W × bands × 4 B)
    exceed :func:`geolesf.io.cube.array_budget`; only rasterio-readable files (GeoTIFF, ENVI through
    GDAL, ...) are read through windows, a ``.mat`` cube always goes in memory.
    """
    from geolesf.io.cube import array_budget, split_spec

    setting = windowed_setting(getattr(data, "windowed", "auto"))
    if setting == "false" or not data.cube:
        return False
    from geolesf.io.envi import is_envi
    from geolesf.io.sensors import detect

    path, key = split_spec(data.cube)
    # windows are read from plain rasters (GeoTIFF, ...); ENVI cubes and sensor products (scales,
    # quality layers) go through their own readers, whole
    readable = key is None and path.suffix.lower() != ".mat" and not is_envi(path) and detect(path) is None
    if setting == "true":
        if not readable:
            raise ConfigError(f"data.windowed: {data.cube} is not a plain raster (a MATLAB, ENVI or sensor-product "
                              "cube); windowed reading needs a GeoTIFF-like raster — set data.windowed: false or "
                              "convert the cube")
        return True
    if not readable or not path.is_file():
        return False
    with RasterWindows(path) as src:
        need = IN_MEMORY_COPIES * src.height * src.width * src.bands * 4
    return need > array_budget()


class RasterWindows:
    """A raster opened once; ``read`` returns ``(h, w, bands)`` windows in the file's dtype."""

    def __init__(self, path: str | Path, cache_mb: int | None = None) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        from geolesf.io.cube import require_file, resolve_path

        self.path = resolve_path(path)
        require_file(self.path, "cube raster")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise DataError(f"{self.path}: cannot be read as a raster ({' '.join(str(exc).split())})") from None
        ds = self._ds
        self.height, self.width, self.bands = ds.height, ds.width, ds.count
        self.dtype = np.dtype(ds.dtypes[0])
        if self.dtype.kind not in "biuf":
            raise DataError(f"{self.path}: unsupported cube dtype {self.dtype}")
        self.crs = ds.crs
        self.transform = None if ds.transform.is_identity else ds.transform
        self.nodata = ds.nodata
        self.band_names = [d or f"band_{i + 1}" for i, d in enumerate(ds.descriptions)]
        self.indexes = list(range(1, ds.count + 1))
        """1-based bands read (all; :meth:`WindowedCube.keep_bands` narrows them)."""
        try:  # per-band 'wavelength' tags, as geolesf.io.hsi reads them for a whole cube
            self.wavelengths: list[float] | None = [float(ds.tags(b)["wavelength"]) for b in self.indexes]
        except (KeyError, TypeError, ValueError):
            self.wavelengths = None
        bh = ds.block_shapes[0][0] if ds.block_shapes else 1
        if cache_mb is None:  # two block rows of the file, at least 32 MiB, at most 512 MiB
            cache_mb = int(min(512, max(32, 2 * bh * self.width * self.bands * self.dtype.itemsize >> 20)))
        self._env = rasterio.Env(GDAL_CACHEMAX=int(cache_mb))
        self._env.__enter__()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.bands

    def read(self, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> np.ndarray:
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        c1 = self.width if c1 is None else c1
        try:
            arr = self._ds.read(self.indexes, window=Window(c0, r0, c1 - c0, r1 - r0))
        except RasterioError as exc:
            raise DataError(f"{self.path}: rows {r0}..{r1} cannot be read, truncated or corrupt? "
                            f"({' '.join(str(exc).split())})") from None
        data = np.ascontiguousarray(arr.transpose(1, 2, 0))
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise DataError(f"{self.path}: NaN or Inf values in rows {r0}..{r1}; fill or drop these bands first")
        return data

    def close(self) -> None:
        if getattr(self, "_ds", None) is not None:
            self._ds.close()
            self._env.__exit__(None, None, None)
            self._ds = None

    def __enter__(self) -> RasterWindows:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def band_rows(width: int, features: int, band_bytes: int | None = None, minimum: int = 1) -> int:
    """Rows per band so that ``rows × width × features × 4 B`` stays within ``band_bytes`` (:data:`BAND_BYTES`)."""
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    return max(minimum, int(band_bytes // max(1, width * features * 4)))


def iter_bands(height: int, rows: int) -> Iterator[tuple[int, int]]:
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def scene_band_stats(src: RasterWindows, band_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and population std of every pixel, streamed band by band (float64)."""
    n, mean, m2 = 0, np.zeros(src.bands), np.zeros(src.bands)
    for r0, r1 in iter_bands(src.height, band_rows(src.width, src.bands, band_bytes)):
        x = src.read(r0, r1).reshape(-1, src.bands).astype(np.float64)
        nb, mb = x.shape[0], x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        delta = mb - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta ** 2 * (n * nb / total)
        n = total
    return mean, np.sqrt(m2 / n)


def to_features(raw: np.ndarray, normalizer: Any = None, pca: Any = None, chunk_rows: int = 8) -> np.ndarray:
    """``(h, w, bands)`` raw → ``(h, w, F)`` float32: ``astype(float32)``, normaliser, PCA — the in-memory
    path's operations, applied ``chunk_rows`` rows at a time so that the float64 temporaries of the
    z-score stay small (elementwise, so the values are the same)."""
    features = pca.n_components if pca is not None else raw.shape[2]
    out = np.empty(raw.shape[:2] + (features,), dtype=np.float32)
    for i in range(0, raw.shape[0], chunk_rows):
        x = raw[i:i + chunk_rows].astype(np.float32)
        if normalizer is not None:
            x = normalizer.transform(x)
        if pca is not None:
            x = pca.transform(x)
        out[i:i + chunk_rows] = x
    return out


class FeatureWindows:
    """Raw windows of ``src`` → float32 model features (normaliser, then PCA), as the in-memory path."""

    def __init__(self, src: RasterWindows, normalizer: Any = None, pca: Any = None) -> None:
        self.src, self.normalizer, self.pca = src, normalizer, pca
        self.height, self.width = src.height, src.width

    @property
    def num_features(self) -> int:
        return self.pca.n_components if self.pca is not None else self.src.bands

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.num_features

    def read(self, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> np.ndarray:
        return to_features(self.src.read(r0, r1, c0, c1), self.normalizer, self.pca)

    def __getitem__(self, mask: Any) -> np.ndarray:
        """``features[mask]`` for an ``(H, W)`` bool mask: ``(N, F)`` spectra in row-major order."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.height, self.width):
            raise TypeError("windowed features are indexed only by an (H, W) boolean mask")
        rows, cols = np.nonzero(mask)
        return WindowedPatches(self, 1).gather_all(rows, cols)[:, :, 0, 0].numpy()


class WindowedPatches:
    """``P×P`` patches of pixels of a :class:`FeatureWindows`, equal to PatchGatherer's on the whole cube."""

    def __init__(self, features: FeatureWindows, patch_size: int, padding: str = "symmetric",
                 band_bytes: int | None = None) -> None:
        import torch

        if patch_size % 2 != 1 or patch_size < 1:
            raise ConfigError(f"patch size must be odd and positive, found {patch_size}")
        if padding not in PAD_MODES:
            raise ConfigError(f"padding must be one of {', '.join(PAD_MODES)}, found '{padding}'")
        self.features, self.patch_size, self.radius = features, patch_size, patch_size // 2
        self.mode = PAD_MODES[padding]
        self.rows_per_band = band_rows(features.width, features.num_features, band_bytes, minimum=patch_size)
        self.offsets = torch.arange(patch_size)
        self._band: tuple[int, Any] | None = None
        self._keys = np.empty(0, dtype=np.int64)
        self._cache: Any = None

    def _read_band(self, k: int) -> Any:
        """The padded features of band ``k`` as a ``(F, rows + 2r, W + 2r)`` tensor (one cached)."""
        import torch

        if self._band is not None and self._band[0] == k:
            return self._band[1]
        self._band = None
        f, r = self.features, self.radius
        a, b = k * self.rows_per_band, min(f.height, (k + 1) * self.rows_per_band)
        wa, wb = max(0, a - r), min(f.height, b + r)
        x = f.read(wa, wb)
        pads = ((wa - (a - r), (b + r) - wb), (r, r), (0, 0))
        if any(p for pair in pads for p in pair):
            x = np.pad(x, pads, mode=self.mode)
        band = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        self._band = (k, band)
        return band

    def _gather_band(self, k: int, rows: np.ndarray, cols: np.ndarray) -> Any:
        import torch

        band = self._read_band(k)
        rr = (torch.as_tensor(rows - k * self.rows_per_band)[:, None] + self.offsets)[:, :, None]
        cc = (torch.as_tensor(cols)[:, None] + self.offsets)[:, None, :]
        return band[:, rr, cc].permute(1, 0, 2, 3)

    def gather_all(self, rows: np.ndarray, cols: np.ndarray) -> Any:
        """``(n, F, P, P)`` float32 patches of ``(rows, cols)`` in the given order, each band read once."""
        import torch

        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        out = torch.empty((len(rows), self.features.num_features, self.patch_size, self.patch_size))
        which = rows // self.rows_per_band
        order = np.argsort(which, kind="stable")
        bounds = np.flatnonzero(np.diff(which[order])) + 1
        for idx in np.split(order, bounds) if len(order) else []:
            out[torch.as_tensor(idx)] = self._gather_band(int(which[idx[0]]), rows[idx], cols[idx])
        return out

    def preload(self, rows: np.ndarray, cols: np.ndarray, where: str = "training patches") -> None:
        """Keep the patches of these pixels in memory (refused over the array budget)."""
        from geolesf.io.cube import check_budget

        n = len(rows)
        check_budget(n * self.features.num_features * self.patch_size ** 2 * 4,
                     f"{where} ({n:,} pixels × {self.features.num_features} features × "
                     f"{self.patch_size}×{self.patch_size}); use fewer training pixels or a smaller patch",
                     (n, self.features.num_features, self.patch_size, self.patch_size))
        keys = np.asarray(rows, dtype=np.int64) * self.features.width + np.asarray(cols, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._cache = self.gather_all(np.asarray(rows)[order], np.asarray(cols)[order])
        self._band = None

    def __call__(self, rows: Any, cols: Any) -> Any:
        """Patches of ``(rows, cols)`` tensors: from the preloaded set, else read through bands."""
        import torch

        r = np.asarray(rows, dtype=np.int64)
        c = np.asarray(cols, dtype=np.int64)
        if self._cache is not None and len(self._keys):
            keys = r * self.features.width + c
            pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
            if np.array_equal(self._keys[pos], keys):
                return self._cache[torch.as_tensor(pos)]
        return self.gather_all(r, c)


# --------------------------------------------------------------------------------------------
# the scene of an hsi run: cube, labels, features


class WindowedCube:
    """What the hsi run needs of a cube read through windows: :class:`~geolesf.io.cube.HSICube`'s
    metadata (shape, bands, CRS, transform, path) without its ``data`` (None: the pixels stay on disk)."""

    data = None
    fwhm = scale = offset = valid = quality = acquired = sensor = None

    def __init__(self, windows: RasterWindows) -> None:
        self.windows = windows
        self.band_names = windows.band_names
        self.wavelengths = windows.wavelengths
        self.nodata, self.crs, self.transform = windows.nodata, windows.crs, windows.transform
        self.path = str(windows.path)

    shape = property(lambda self: self.windows.shape)
    height = property(lambda self: self.windows.height)
    width = property(lambda self: self.windows.width)
    bands = property(lambda self: self.windows.bands)
    dtype = property(lambda self: self.windows.dtype)
    georeferenced = property(lambda self: self.crs is not None)

    def georef_note(self) -> str:
        from geolesf.io.cube import HSICube

        return HSICube.georef_note(self)  # type: ignore[arg-type]

    def keep_bands(self, keep: list[int]) -> WindowedCube:
        """Read only the bands ``keep`` (0-based; ``data.drop_bands``) from now on."""
        w = self.windows
        w.indexes = [w.indexes[i] for i in keep]
        w.bands = len(w.indexes)
        w.band_names = [w.band_names[i] for i in keep]
        w.wavelengths = None if w.wavelengths is None else [w.wavelengths[i] for i in keep]
        self.band_names, self.wavelengths = w.band_names, w.wavelengths
        return self


def open_scene_cube(data: Any) -> Any:
    """``data.cube`` read whole (:func:`geolesf.io.hsi.read_cube`) or opened for windows (:func:`use_windowed`)."""
    from geolesf.io.hsi import read_cube

    if use_windowed(data):
        if getattr(data, "mask_unlabelled", False):
            raise ConfigError("data.mask_unlabelled is not available with a windowed scene (the class map is "
                              "streamed from the cube alone); set it false, or data.windowed: false")
        return WindowedCube(RasterWindows(data.cube))
    return read_cube(data.cube)


def scene_features(cube: Any, train: np.ndarray, data: Any, seed: int) -> tuple[Any, Any, Any]:
    """``(features, normalizer, pca)`` of the run: ``data.normalize`` (train | scene | none) and
    ``data.pca`` fitted as configured. In memory: the ``(H, W, F)`` float32 array. Windowed: a
    :class:`FeatureWindows` whose statistics came from the training pixels read through windows
    (or a streamed pass over the scene for ``normalize: scene``)."""
    from geolesf.data.transforms import PCA, BandNormalizer

    mode = str(data.normalize).lower()
    if mode not in ("train", "scene", "none"):
        raise ConfigError(f"data.normalize must be train, scene or none, found '{data.normalize}'")
    windowed = isinstance(cube, WindowedCube)
    raw = FeatureWindows(cube.windows) if windowed else None
    x = None if windowed else cube.data.astype(np.float32)
    normalizer = None
    if mode == "train":
        fit_on = raw[train] if windowed else x
        normalizer = BandNormalizer().fit(fit_on, None if windowed else train, fitted_on="train pixels")
    elif mode == "scene" and windowed:
        mean, std = scene_band_stats(cube.windows)
        normalizer = BandNormalizer(mean, np.where(std > 0, std, 1.0), fitted_on="whole scene")
    elif mode == "scene":
        normalizer = BandNormalizer().fit(x, None, fitted_on="whole scene")
    if normalizer is not None and not windowed:
        x = normalizer.transform(x)
    pca = None
    if data.pca:
        pca = PCA(int(data.pca), seed=seed)
        if windowed:
            pca.fit(FeatureWindows(cube.windows, normalizer)[train], None)
        else:
            pca.fit(x, train)
            x = pca.transform(x)
    if windowed:
        return FeatureWindows(cube.windows, normalizer, pca), normalizer, pca
    return np.ascontiguousarray(x, dtype=np.float32), normalizer, pca
