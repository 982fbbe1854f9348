"""The native implementation of the ``cpu`` backend: the C kernel, its build cache and its loading.

The kernel source lives beside this module (``scan_kernel.c``, which includes ``scan_kernel_instance.h`` --
``scan_kernel_body.h``, ``scan_kernel_infer.h``, ``scan_kernel_grad.h``, ``scan_kernel_fused.h`` and
``scan_kernel_parallel.h`` -- once per precision, and ``scan_kernel_avx512.h`` / ``scan_kernel_avx512_rows.h`` once
where the compiler targets AVX-512) and is shipped as package data. On first use it
is compiled with the system C compiler (about a second) into a shared library cached in
``$GEOLESF_KERNEL_CACHE`` or a private folder in the temp directory, under a key that hashes
the kernel source files' bytes, the compiler, the flags and the CPU (so editing the C source
rebuilds it), loaded with ctypes and run over batch parts on ``torch.get_num_threads()``
threads of PyTorch's own OpenMP team (:func:`run_kernel`). ``GEOLESF_SCAN_NATIVE=0`` disables it.

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
import re
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
                  "scan_kernel_infer.h", "scan_kernel_grad.h", "scan_kernel_fused.h", "scan_kernel_parallel.h",
                  "scan_kernel_instance.h")

_NATIVE = {"tried": False, "lib": None, "error": None}
_NATIVE_LOCK = threading.Lock()
_POOL = {"pool": None, "size": 0}
_OMP = {"tried": False, "entry": None}

# gl_run's kernel index: 2 * KERNEL_IDS[name] + (1 for float64); scan_kernel.c's gl_parts table
KERNEL_IDS = {"infer": 0, "grad": 1, "fused": 2, "fused_grad": 3}
_OMP_RUNTIME = re.compile(r"^lib(gomp|iomp5|omp)([-.][^/]*)?\.so(\.[0-9]+)*$")


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
    lib.gl_run.argtypes = [i64, ptr, i64, i64, i64, i64, ptr, i64]
    lib.gl_run.restype = ctypes.c_int


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


def _openmp_parallel_entry():
    """The address of ``GOMP_parallel`` in the OpenMP runtime PyTorch's own CPU ops run on, or None.

    Found among the libraries already loaded (``/proc/self/maps``): the runtime in PyTorch's
    own ``lib`` folder (pip wheels bundle one), else the only one loaded. It is never loaded
    here (``RTLD_NOLOAD``), so a second runtime with threads of its own never enters the
    process. None where PyTorch's parallel backend is not OpenMP, where the maps cannot be read
    (not Linux) or the runtime is ambiguous; the kernels then run on a Python thread pool.
    """
    with _NATIVE_LOCK:
        if _OMP["tried"]:
            return _OMP["entry"]
        _OMP["tried"] = True
    entry = None
    try:
        if "parallel backend: OpenMP" in torch.__config__.parallel_info():
            mapped = (ln.split(None, 5) for ln in Path("/proc/self/maps").read_text().splitlines())
            paths = sorted({f[5] for f in mapped if len(f) == 6 and _OMP_RUNTIME.match(os.path.basename(f[5]))})
            torch_lib = str(Path(torch.__file__).resolve().parent / "lib") + os.sep
            own = [p for p in paths if os.path.realpath(p).startswith(torch_lib)]
            candidates = own or (paths if len(paths) == 1 else [])
            for path in candidates:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
                fn = getattr(lib, "GOMP_parallel", None)
                if fn is not None:
                    entry = ctypes.cast(fn, ctypes.c_void_p).value
                    break
    except (OSError, AttributeError, IndexError):
        entry = None
    _OMP["entry"] = entry
    return entry


def _thread_pool(threads):
    with _NATIVE_LOCK:
        if _POOL["pool"] is None or _POOL["size"] != threads:
            if _POOL["pool"] is not None:
                _POOL["pool"].shutdown(wait=False)
            _POOL["pool"] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="geolesf-scan")
            _POOL["size"] = threads
        return _POOL["pool"]


def run_kernel(name, dtype, words, batch, nparts):
    """Run kernel ``name`` (a key of :data:`KERNEL_IDS`) over the batch, split into ``nparts`` parts.

    ``words`` are the kernel's arguments in its C order without ``b0``/``b1`` (tensors' data
    pointers, ``None`` for NULL, stride arrays' addresses, integers); part ``p`` adds its partial
    sums into slice ``p`` of each accumulator (``scan_kernel_parallel.h``). With
    ``torch.get_num_threads()`` > 1 the parts run on PyTorch's own OpenMP team
    (:func:`_openmp_parallel_entry`), or where that runtime is not found, on a Python thread
    pool (ctypes releases the GIL). Raises MemoryError when the kernel cannot allocate scratch.
    """
    lib = _NATIVE["lib"]
    which = 2 * KERNEL_IDS[name] + (1 if dtype == torch.float64 else 0)
    args = (ctypes.c_int64 * len(words))(*(0 if w is None else int(w) for w in words))
    threads = max(1, torch.get_num_threads())
    entry = _openmp_parallel_entry() if threads > 1 and nparts > 1 else None
    if threads == 1 or nparts == 1 or entry is not None:
        rcs = [lib.gl_run(which, args, batch, nparts, 0, nparts, entry, threads)]
    else:
        rcs = list(_thread_pool(threads).map(
            lambda p: lib.gl_run(which, args, batch, nparts, p, p + 1, None, 1), range(nparts)))
    if any(rc == 2 for rc in rcs):
        raise RuntimeError(f"native selective scan: the loaded library has no kernel {which}")
    if any(rcs):
        raise MemoryError("native selective scan: out of memory")


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
    the kernel, which transposes them itself). Batch parts run as :func:`run_kernel` spreads them.
    """
    batch, channels, L = u.shape
    K, N = B.shape[1], A2.shape[1]
    y = torch.empty_like(u)
    sB = (ctypes.c_int64 * 4)(*B.stride())
    sC = (ctypes.c_int64 * 4)(*C.stride())
    sp = int(bool(delta_softplus))
    run_kernel("infer", u.dtype, [u.data_ptr(), delta.data_ptr(), _ptr(delta_bias), sp, A2.data_ptr(),
                                  B.data_ptr(), C.data_ptr(), ctypes.addressof(sB), ctypes.addressof(sC), _ptr(D),
                                  y.data_ptr(), channels, K, L, N], batch, _n_parts(batch))
    return y


class _NativeSelectiveScan(torch.autograd.Function):
    """Forward/backward entirely in the C kernel: softplus, recurrence, adjoint and the
    reductions for dA, dD and delta_bias. The forward is :func:`native_forward`; the backward
    (``scan_kernel_grad.h``; ``scan_kernel_avx512*.h`` for float32, N = 16 in the AVX-512 build) uses
    the same channel blocks. Both read B and C through their
    strides. Batch parts are spread as :func:`run_kernel` does. Nothing but the inputs is saved."""

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
        dA_parts = u.new_zeros(nparts, channels, N)  # per-part partial sums, reduced below
        dD_parts = u.new_zeros(nparts, channels)
        db_parts = u.new_zeros(nparts, channels)
        run_kernel("grad", u.dtype, [u.data_ptr(), delta.data_ptr(), _ptr(delta_bias), ctx.delta_softplus,
                                     A2.data_ptr(), B.data_ptr(), C.data_ptr(), ctypes.addressof(sB),
                                     ctypes.addressof(sC), _ptr(D), gy.data_ptr(), du.data_ptr(), ddelta.data_ptr(),
                                     dA_parts.data_ptr(), dD_parts.data_ptr(), db_parts.data_ptr(), dB.data_ptr(),
                                     dC.data_ptr(), channels, K, L, N], batch, nparts)
        dD = dD_parts.sum(0) if D is not None else None
        dbias = db_parts.sum(0) if delta_bias is not None else None
        return du, ddelta, dA_parts.sum(0), dB, dC, dD, dbias, None
