"""Build helper of the C generation kernel (csrc/lstm_engine.c): compile once, cache, load.

The kernel is a plain C shared library with no Python or torch API in it, so it needs only the
system C compiler, found the way setuptools builds extensions (its `distutils` compiler
abstraction: `CC`/sysconfig on Linux and macOS, MSVC on Windows); this module is the one
place that runs a compiler. The library is built at first use with -O3 -march=native (plain
-O3 where the compiler refuses that; /O2 on MSVC) into a per-user cache folder, keyed by the
source, the compiler command and the CPU, and loaded with ctypes. `VARIANTS` names the other
builds, which tests use to check that every path gives the same numbers: "plain" (no
-march=native: GCC vectors without F16C, half weights widened in C) and "portable"
(-DLOFI_PORTABLE: the scalar loops MSVC builds).

Where no compiler works (or setuptools is missing) `load_kernel()` warns once, on one line, and
returns None; the engine then uses its pure-torch backend (the plan family's renderer its
reference loop, `backend_render`). Environment:
- LOFIBEATS_KERNEL=off  skip the kernel (use the pure-torch backend) without a warning;
- LOFIBEATS_CACHE_DIR   where built kernels go (default: the OS's user cache folder).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from filelock import FileLock

SOURCE = Path(__file__).resolve().parent / "csrc" / "lstm_engine.c"
ABI = 8  # must match LOFI_ABI in the C source
PANEL = 16  # must match LOFI_NB: columns per packed weight panel
RECALL, LOCAL = 32, 64  # must match LOFI_RECALL, LOFI_LOCAL: a lookback's recall per frame
EXPORTS = (
    "lofi_abi",
    "lofi_encode",
    "lofi_decode",
    "lofi_frames",
    "lofi_copy_mix",
    "lofi_render",
)

_UNIX_FLAGS = ("-O3", "-std=c99", "-ffp-contract=fast", "-fno-trapping-math")
_MSVC_FLAGS = ("/O2",)
VARIANTS = ("native", "plain", "portable")
_P = ctypes.c_void_p
_I32, _I64, _F32 = ctypes.c_int32, ctypes.c_int64, ctypes.c_float


class LSTMSpec(ctypes.Structure):
    """Mirror of the C `LofiLSTM` struct."""

    _fields_ = [
        ("layers", _I32),
        ("hidden", _I32),
        ("n_gates", _I32),
        ("n_classes", _I32),
        ("half", _I32),
        ("table", _P),
        ("slope", _P),
        ("base", _P),
        ("weights", ctypes.POINTER(_P)),
        ("bias", ctypes.POINTER(_P)),
    ]


class HeadSpec(ctypes.Structure):
    """Mirror of the C `LofiHead` struct."""

    _fields_ = [("n_out", _I32), ("n_pad", _I32), ("half", _I32), ("weights", _P), ("bias", _P)]


class FrameTierSpec(ctypes.Structure):
    """Mirror of the C `LofiFrameTier` struct."""

    _fields_ = [
        ("frame_size", _I32),
        ("width", _I32),
        ("n_out", _I32),
        ("n_pad", _I32),
        ("n_up", _I32),
        ("frame_values", _P),
        ("upsample", _P),
        ("window_bias", _P),
        ("table", _P),
        ("slope", _P),
        ("offset", _P),
        ("out_weight", _P),
        ("out_bias", _P),
        ("recall", _I32),
        ("gate_bias", _F32),
        ("copy_width", _F32),
        ("gate_weight", _P),
        ("levels", _P),
    ]


class RecallSpec(ctypes.Structure):
    """Mirror of the C `LofiRecall` struct: one hop of a lookback decode."""

    _fields_ = [
        ("signal", _P),
        ("stride", _I64),
        ("end", _I64),
        ("lags", _P),
        ("scores", _P),
        ("loop_stay", _F32),
        ("loop_log", _F32),
    ]


class RendererSpec(ctypes.Structure):
    """Mirror of the C `LofiRenderer` struct: the plan family's renderer."""

    _fields_ = [
        ("past", _I32),
        ("hidden", _I32),
        ("n_hidden", _I32),
        ("n_classes", _I32),
        ("n_pad", _I32),
        ("hop", _I32),
        ("past_weight", _P),
        ("past_bias", _P),
        ("mix_weight", _P),
        ("mix_bias", _P),
        ("out_weight", _P),
        ("out_bias", _P),
        ("levels", _P),
    ]


def user_cache_dir() -> Path:
    """Where built kernels are cached: $LOFIBEATS_CACHE_DIR, else the OS's per-user cache."""
    if override := os.environ.get("LOFIBEATS_CACHE_DIR"):
        return Path(override).expanduser()
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return root / "lofibeats" / "Cache" / "kernels"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lofibeats" / "kernels"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lofibeats" / "kernels"


def _new_compiler() -> Any:
    """setuptools' compiler abstraction, set up like an extension build (CC, CFLAGS, MSVC)."""
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    import setuptools  # noqa: F401  (installs the `distutils` shim on Python >= 3.12)

    compiler = new_compiler()
    customize_compiler(compiler)
    return compiler


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and feature flags where the OS says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text(errors="replace").splitlines()
        wanted = ("model name", "flags", "features", "cpu model", "isa")
        return "\n".join(sorted({ln for ln in lines if ln.lower().startswith(wanted)}))
    return f"{platform.machine()} {platform.processor()}"


def _cache_key(compiler: Any, variant: str) -> str:
    parts = [
        variant,
        hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        compiler.compiler_type,
        repr(getattr(compiler, "compiler_so", "")),
        repr(_UNIX_FLAGS + _MSVC_FLAGS),
        sys.platform,
        platform.machine(),
        _cpu_id(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _compile(compiler: Any, build_dir: Path, target: Path, variant: str) -> None:
    """Compile SOURCE into the shared library `target` (native CPU flags first, then plain)."""
    from distutils.errors import CompileError

    if compiler.compiler_type == "msvc":
        attempts = [list(_MSVC_FLAGS)]
    elif variant == "plain":
        attempts = [list(_UNIX_FLAGS)]
    else:
        attempts = [[*_UNIX_FLAGS, "-march=native"], list(_UNIX_FLAGS)]
    macros = [("LOFI_PORTABLE", None)] if variant == "portable" else None
    for i, flags in enumerate(attempts):
        try:
            objects = compiler.compile(
                [str(SOURCE)],
                output_dir=str(build_dir / str(i)),
                macros=macros,
                extra_postargs=flags,
            )
            break
        except CompileError:
            if i == len(attempts) - 1:
                raise
    compiler.link_shared_object(
        objects,
        str(target),
        export_symbols=list(EXPORTS),
        libraries=[] if compiler.compiler_type == "msvc" else ["m"],
        build_temp=str(build_dir),
    )


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the exported functions' signatures (see the C source)."""
    lstm, head = ctypes.POINTER(LSTMSpec), ctypes.POINTER(HeadSpec)
    tier = ctypes.POINTER(FrameTierSpec)
    lib.lofi_abi.restype = ctypes.c_int
    lib.lofi_abi.argtypes = []
    lib.lofi_encode.restype = ctypes.c_int
    lib.lofi_encode.argtypes = [lstm, _I32, _I32, _P, _P, _P, _P]
    lib.lofi_decode.restype = ctypes.c_int
    lib.lofi_decode.argtypes = [
        *(lstm, head, _I32, _I32, _P, _P, _P, _P, _P, _I64, _I64, _P, _I32, _F32, _F32, _P, _P)
    ]
    lib.lofi_frames.restype = ctypes.c_int
    lib.lofi_frames.argtypes = [
        *(lstm, tier, _I32, _I32, _P, _P, _P, _P, _P, _I64, _I64, _P, _I64, _I64, _P, _I32),
        *(_F32, _F32, ctypes.POINTER(RecallSpec), _P, _P),
    ]
    lib.lofi_copy_mix.restype = ctypes.c_int
    lib.lofi_copy_mix.argtypes = [tier, _I32, _P, _P, _P, _F32, _F32, _P]
    lib.lofi_render.restype = ctypes.c_int
    lib.lofi_render.argtypes = [
        *(ctypes.POINTER(RendererSpec), _I32, _I32, _P, _P, _I64, _I32, _P, _F32, _P, _P)
    ]
    return lib


def build_kernel(cache_dir: Path | None = None, variant: str = "native") -> Path:
    """The path of the compiled kernel for this machine (the build `variant`, see `VARIANTS`),
    building it if it is not cached.

    Safe to call from several processes at once (a file lock; the library is renamed into place).
    Raises what the compiler abstraction raises when no compiler works.
    """
    if variant not in VARIANTS:
        raise ValueError(f"kernel variant {variant!r}: use one of {', '.join(VARIANTS)}")
    compiler = _new_compiler()
    cache_dir = Path(cache_dir or user_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".dll" if sys.platform == "win32" else ".so"
    target = cache_dir / f"lstm_engine-{_cache_key(compiler, variant)}{suffix}"
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
                built = Path(tmp) / target.name
                _compile(compiler, Path(tmp), built, variant)
                os.replace(built, target)
    return target


def _build_errors() -> tuple[type[Exception], ...]:
    """What a missing or failing compiler raises: no setuptools, no compiler, a failed build or
    load (distutils' errors where setuptools is there)."""
    errors: list[type[Exception]] = [ImportError, OSError]
    try:
        from distutils.errors import CCompilerError, DistutilsError

        import setuptools  # noqa: F401
    except ImportError:
        return tuple(errors)
    return (*errors, CCompilerError, DistutilsError)


def open_kernel(path: Path) -> ctypes.CDLL:
    """The built kernel at `path`, loaded and bound; OSError where its ABI is not `ABI`."""
    lib = _bind(ctypes.CDLL(str(path)))
    if lib.lofi_abi() != ABI:
        raise OSError(f"{SOURCE.name} reports ABI {lib.lofi_abi()}, this module needs {ABI}")
    return lib


def kernel_switched_off() -> bool:
    """Whether LOFIBEATS_KERNEL turns the kernel off ("off", "0", "false" or "no")."""
    return os.environ.get("LOFIBEATS_KERNEL", "on").lower() in ("off", "0", "false", "no")


@functools.cache
def load_kernel() -> ctypes.CDLL | None:
    """The kernel library (built at first use, then cached), or None where it cannot be had:
    then one warning line says why and the engine falls back to pure torch."""
    if kernel_switched_off():
        return None
    try:
        lib = open_kernel(build_kernel())
    except _build_errors() as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]
        warnings.warn(
            f"lofibeats: no C generation kernel ({type(exc).__name__}: {reason}); "
            "using the slower pure-torch engine (set LOFIBEATS_KERNEL=off to silence)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return lib
