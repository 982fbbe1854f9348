"""The native implementation of the ``cpu`` backend: the C kernel, its build cache and its loading.

The kernel source lives beside this module (``scan_kernel.c``, which includes
``scan_kernel_body.h``, ``scan_kernel_infer.h``, ``scan_kernel_grad.h`` and ``scan_kernel_fused.h`` once
per precision, and ``scan_kernel_avx512.h`` / ``scan_kernel_avx512_rows.h`` once where the compiler targets AVX-512) and is shipped as package data. On first use it
is compiled with the system C compiler (about a second) into a shared library cached in
``$GEOLESF_KERNEL_CACHE`` or a private folder in the temp directory, under a key that hashes
the kernel source files' bytes, the compiler, the flags and the CPU (so editing the C source
rebuilds it), loaded with ctypes and run over batch ranges on ``torch.get_num_threads()``
threads. ``GEOLESF_SCAN_NATIVE=0`` disables it.

Loading a shared library runs its code, so the cache is trusted only when it is safe:

* the cache folder (``$GEOLESF_KERNEL_CACHE`` or ``<tmp>/geolesf-kernels-<uid>``) must be a real
  folder (checked with ``lstat``: a symlink is refused), owned by the current user and not
  writable by group or others. An untrusted one is not used: a ``RuntimeWarning`` names it and
  the kernel is built in a fresh private temp folder (``mkdtemp``, mode 0700) instead;
* each library ``selective_scan_<key>.so`` has a ``.so.sha256`` sidecar, written atomically at
  compile time; the library is loaded only if both are regular files owned by the user, not
  group/other-writable, and the library's sha256 matches the sidecar. Otherwise it is rebuilt
  (and replaced), never loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from geolesf.ops.selective_scan.contract import _LOG2E

NATIVE_ENV_VAR = "GEOLESF_SCAN_NATIVE"
KERNEL_CACHE_ENV_VAR = "GEOLESF_KERNEL_CACHE"

# The kernel sources, in this package's folder. KERNEL_SOURCE is what is compiled; every file
# in KERNEL_SOURCES (it and what it #includes) is hashed into the cache key.
KERNEL_DIR = Path(__file__).resolve().parent
KERNEL_SOURCE = "scan_kernel.c"
KERNEL_SOURCES = (KERNEL_SOURCE, "scan_kernel_avx512.h", "scan_kernel_avx512_rows.h", "scan_kernel_body.h",
                  "scan_kernel_infer.h", "scan_kernel_grad.h", "scan_kernel_fused.h")

_NATIVE = {"tried": False, "lib": None, "error": None}
_NATIVE_LOCK = threading.Lock()
_POOL = {"pool": None, "size": 0}


def _kernel_source_bytes() -> bytes:
    """The bytes of every kernel source file, each prefixed by its name (the cache key's input)."""
    return b"\0".join(name.encode() + b"\0" + (KERNEL_DIR / name).read_bytes() for name in KERNEL_SOURCES)


def _untrusted_reason(st: os.stat_result, *, folder: bool) -> str | None:
    """Why an ``lstat`` result is not safe to trust for the kernel cache (None: it is)."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if folder and not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if not folder and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _private_temp_cache() -> Path:
    return Path(tempfile.mkdtemp(prefix="geolesf-kernels-"))


def _kernel_cache_dir() -> Path:
    """The kernel cache folder, trusted only if it is a real folder of ours that others cannot write.

    ``$GEOLESF_KERNEL_CACHE`` (created with mode 0700 if missing) or ``<tmp>/geolesf-kernels-<uid>``.
    An untrusted folder (a symlink, another owner, group/other-writable) is refused with a
    ``RuntimeWarning`` and a fresh private temp folder is used for this process instead.
    """
    value = os.environ.get(KERNEL_CACHE_ENV_VAR)
    if value:
        path = Path(value).expanduser()
        source = f"{KERNEL_CACHE_ENV_VAR}={value}"
    else:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        path = Path(tempfile.gettempdir()) / f"geolesf-kernels-{uid}"
        source = "the default kernel cache"
    try:
        if not os.path.lexists(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=0o700, exist_ok=True)
        reason = _untrusted_reason(os.lstat(path), folder=True)
    except OSError as exc:
        reason = f"cannot be used ({exc.strerror or exc})"
    if reason is None:
        return path
    fallback = _private_temp_cache()
    warnings.warn(
        f"geolesf: {source}: {path} {reason}; not loading native kernels from it, "
        f"building in the private folder {fallback} instead", RuntimeWarning, stacklevel=2,
    )
    return fallback


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified_library(lib_path: Path) -> bool:
    """Whether a cached library may be loaded: it and its ``.sha256`` sidecar are regular files of
    ours that others cannot write, and the library's sha256 is the one recorded when it was built."""
    sidecar = lib_path.with_name(lib_path.name + ".sha256")
    try:
        if _untrusted_reason(os.lstat(lib_path), folder=False) is not None:
            return False
        if _untrusted_reason(os.lstat(sidecar), folder=False) is not None:
            return False
        recorded = sidecar.read_text(encoding="ascii").strip()
        return len(recorded) == 64 and recorded == _sha256_file(lib_path)
    except (OSError, UnicodeDecodeError):
        return False


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor()



def _build_flag_sets():
    # No -ffast-math (it would break the rounding trick in gl_exp2f); -fno-trapping-math
    # lets the clamps vectorise, -ffp-contract=fast allows FMAs under -std=c99.
    common = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-fPIC", "-shared", "-std=c99"]
    # the build for this CPU; on x86, 512-bit vectors where it has AVX-512 (the fused kernel's
    # 16-lane float blocks, scan_kernel_fused.h); the next sets are the portable fallbacks
    wide = ["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else []
    return [
        [*common, "-march=native", *wide, "-fopenmp-simd"],
        [*common, "-fopenmp-simd"],
        ["-O2", "-fPIC", "-shared", "-std=c99"],
    ]


def _cached_build(compiler, flags, source, cache, errors):
    """Path of the library built from the package's kernel source with these flags, compiling it
    into the cache unless a verified copy (sha256 sidecar, see the module docstring) is there
    already; None (with a line added to errors) if it fails."""
    parts = [source] + [s.encode() for s in (compiler, *flags, platform.machine(), _cpu_id())]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:24]
    lib_path = cache / f"selective_scan_{key}.so"
    sidecar = lib_path.with_name(lib_path.name + ".sha256")
    if _verified_library(lib_path):
        return lib_path
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / lib_path.name
        # compiled in place, so compiler messages name the package's own source file and line
        proc = subprocess.run(
            [compiler, *flags, str(KERNEL_DIR / KERNEL_SOURCE), "-o", str(out), "-lm"],
            capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0 or not out.is_file():
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
            return None
        os.chmod(out, 0o755)
        digest_tmp = Path(tmp) / sidecar.name
        digest_tmp.write_text(_sha256_file(out) + "\n", encoding="ascii")
        os.chmod(digest_tmp, 0o644)
        # both renames are atomic (same folder); a reader that sees a new library with an old
        # sidecar finds a mismatch and rebuilds rather than loading it
        os.replace(out, lib_path)
        os.replace(digest_tmp, sidecar)
    if not _verified_library(lib_path):
        errors.append(f"{lib_path}: changed while it was being cached")
        return None
    return lib_path


def _declare_signatures(lib):
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for suf in ("f32", "f64"):
        grad = getattr(lib, f"gl_scan_grad_{suf}")
        grad.argtypes = [ptr, ptr, ptr, i64] + [ptr] * 14 + [i64] * 6
        grad.restype = ctypes.c_int
        inf = getattr(lib, f"gl_scan_infer_{suf}")
        inf.argtypes = [ptr, ptr, ptr, i64] + [ptr] * 7 + [i64] * 6
        inf.restype = ctypes.c_int
        fused = getattr(lib, f"gl_scan_fused_{suf}")
        fused.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr] + [i64] * 7
        fused.restype = ctypes.c_int
        fgrad = getattr(lib, f"gl_scan_fused_grad_{suf}")
        fgrad.argtypes = [ptr] * 6 + [i64] + [ptr] * 14 + [i64] * 7
        fgrad.restype = ctypes.c_int


def _compile_native():
    """Build (or load from the cache) the C kernel; returns a ctypes library or raises."""
    if sys.platform.startswith("win"):
        raise RuntimeError("the native selective-scan kernel is not built on Windows")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC)")
    source = _kernel_source_bytes()
    cache = _kernel_cache_dir()
    errors = []
    for flags in _build_flag_sets():
        lib_path = _cached_build(compiler, flags, source, cache, errors)
        if lib_path is None:
            continue
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError as exc:
            errors.append(f"{lib_path}: {exc}")
            continue
        _declare_signatures(lib)
        return lib
    raise RuntimeError("compiling the native selective-scan kernel failed: " + " | ".join(errors))


def native_kernel_available() -> bool:
    """Whether the compiled C kernel of the ``cpu`` backend can be used in this process.

    Compiled on first use with the system C compiler (about a second), cached in
    ``$GEOLESF_KERNEL_CACHE`` or a private folder under the system temp directory (trusted only
    if owned by the user and not group/other-writable; see the module docstring).
    ``GEOLESF_SCAN_NATIVE=0`` disables it; without a compiler the pure-PyTorch
    implementation is used.
    """
    if os.environ.get(NATIVE_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    with _NATIVE_LOCK:
        if not _NATIVE["tried"]:
            _NATIVE["tried"] = True
            try:
                _NATIVE["lib"] = _compile_native()
            except Exception as exc:  # no compiler, sandbox, odd platform: fall back
                _NATIVE["error"] = str(exc)
                warnings.warn(
                    f"geolesf: native selective-scan kernel unavailable ({exc}); "
                    "using the pure-PyTorch cpu scan", RuntimeWarning, stacklevel=3,
                )
    return _NATIVE["lib"] is not None


def _run_parallel(fn, batch, nparts):
    """Run fn(part, b0, b1) over contiguous batch ranges on a thread pool (ctypes drops the GIL)."""
    bounds = [batch * i // nparts for i in range(nparts + 1)]
    ranges = [(i, bounds[i], bounds[i + 1]) for i in range(nparts) if bounds[i + 1] > bounds[i]]
    threads = max(1, torch.get_num_threads())
    if threads == 1 or len(ranges) == 1:
        return [fn(*r) for r in ranges]
    with _NATIVE_LOCK:
        if _POOL["pool"] is None or _POOL["size"] != threads:
            if _POOL["pool"] is not None:
                _POOL["pool"].shutdown(wait=False)
            _POOL["pool"] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="geolesf-scan")
            _POOL["size"] = threads
        pool = _POOL["pool"]
    return list(pool.map(lambda r: fn(*r), ranges))


def _n_parts(batch):
    # a few parts per thread: even load when another process steals a core
    return max(1, min(batch, 4 * max(1, torch.get_num_threads())))


def _ptr(t):
    return None if t is None else t.data_ptr()


def native_forward(u, delta, A2, B, C, D, delta_bias, delta_softplus):
    """The selective scan's output by the channel-blocked forward kernel (``scan_kernel_infer.h``).

    Keeps nothing for a backward pass. ``u``, ``delta``, ``D``, ``delta_bias`` and
    ``A2 = A * log2(e)`` must be contiguous and of one dtype (float32 or float64); ``B`` and
    ``C`` (batch, K, N, L) may be any strided view of that dtype (their strides are passed to
    the kernel, which transposes them itself). Batch ranges run on the thread pool.
    """
    lib = _NATIVE["lib"]
    batch, channels, L = u.shape
    K, N = B.shape[1], A2.shape[1]
    y = torch.empty_like(u)
    fn = lib.gl_scan_infer_f32 if u.dtype == torch.float32 else lib.gl_scan_infer_f64
    sB = (ctypes.c_int64 * 4)(*B.stride())
    sC = (ctypes.c_int64 * 4)(*C.stride())
    sp = int(bool(delta_softplus))

    def work(_, b0, b1):
        return fn(u.data_ptr(), delta.data_ptr(), _ptr(delta_bias), sp, A2.data_ptr(), B.data_ptr(),
                  C.data_ptr(), ctypes.addressof(sB), ctypes.addressof(sC), _ptr(D), y.data_ptr(),
                  b0, b1, channels, K, L, N)

    if any(_run_parallel(work, batch, _n_parts(batch))):
        raise MemoryError("native selective scan: out of memory")
    return y


class _NativeSelectiveScan(torch.autograd.Function):
    """Forward/backward entirely in the C kernel: softplus, recurrence, adjoint and the
    reductions for dA, dD and delta_bias. The forward is :func:`native_forward`; the backward
    (``scan_kernel_grad.h``; ``scan_kernel_avx512*.h`` for float32, N = 16 in the AVX-512 build) uses
    the same channel blocks. Both read B and C through their
    strides. Batch ranges are spread over a thread pool. Nothing but the inputs is saved."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        A2 = (A * _LOG2E).contiguous()
        y = native_forward(u, delta, A2, B, C, D, delta_bias, delta_softplus)
        ctx.save_for_backward(u, delta, delta_bias, A2, B, C, D)
        ctx.delta_softplus = int(bool(delta_softplus))
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        lib = _NATIVE["lib"]
        u, delta, delta_bias, A2, B, C, D = ctx.saved_tensors
        batch, channels, L = u.shape
        K, N = B.shape[1], A2.shape[1]
        gy = gy.to(u.dtype).contiguous()
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        dB = u.new_empty(batch, K, N, L)  # every element is written by the kernel
        dC = u.new_empty(batch, K, N, L)
        sB = (ctypes.c_int64 * 4)(*B.stride())
        sC = (ctypes.c_int64 * 4)(*C.stride())
        nparts = _n_parts(batch)
        grad = lib.gl_scan_grad_f32 if u.dtype == torch.float32 else lib.gl_scan_grad_f64
        dA_parts = u.new_zeros(nparts, channels, N)  # per-part partial sums, reduced below
        dD_parts = u.new_zeros(nparts, channels)
        db_parts = u.new_zeros(nparts, channels)

        def work(i, b0, b1):
            return grad(u.data_ptr(), delta.data_ptr(), _ptr(delta_bias), ctx.delta_softplus, A2.data_ptr(),
                        B.data_ptr(), C.data_ptr(), ctypes.addressof(sB), ctypes.addressof(sC), _ptr(D),
                        gy.data_ptr(), du.data_ptr(), ddelta.data_ptr(), dA_parts[i].data_ptr(),
                        dD_parts[i].data_ptr(), db_parts[i].data_ptr(), dB.data_ptr(), dC.data_ptr(),
                        b0, b1, channels, K, L, N)

        if any(_run_parallel(work, batch, nparts)):
            raise MemoryError("native selective scan: out of memory")
        dD = dD_parts.sum(0) if D is not None else None
        dbias = db_parts.sum(0) if delta_bias is not None else None
        return du, ddelta, dA_parts.sum(0), dB, dC, dD, dbias, None
