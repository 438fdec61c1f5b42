"""The embedded model's native attention kernel (`attention_kernel.c`): compiled at first use, loaded with ctypes.

Decode and verify steps over a float32 KV cache attend row by row with the kernel (`Engine._native_attend`): each
row's fed positions and the query heads of a key/value head read each of the row's cached columns once, in blocks
that stay in the L1 cache, with no padding to the longest row. The kernel is C without any torch header; the
system C compiler (`$CC`, else `cc`) builds it once per machine in about a third of a second
(`cc -O3 -march=native -shared -fPIC`, no fast-math) into the cache folder (`$SKILLWEAVE_CACHE`, else
~/.cache/skillweave, under `kernels/`), keyed by the source's hash, the compiler's version, the flags and the CPU's
flags, written atomically (a temporary file renamed into place) beside a checksum that is compared before every
load, so a partial or corrupt file is rebuilt, never loaded. ctypes releases the GIL during the call, so two lane
threads run the kernel side by side.

`SKILLWEAVE_LOCAL_KERNEL=torch` keeps torch's attention; so does a machine without a compiler or where the build
fails (one debug log line, no error): `attention_kernel()` then returns None.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("attention_kernel.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
ABI = 1  # what the source's sw_abi() returns
COMPILE_SECONDS = 60  # a compiler that hangs is given up on

_lock = threading.Lock()
_loaded: dict[str, object] = {}  # cache folder -> the kernel (or None: the fallback) for this process


def kernel_setting() -> str:
    """$SKILLWEAVE_LOCAL_KERNEL: `native` (the default: the C kernel where it builds) or `torch` (torch's attention
    always). A ConfigError for anything else; imports no torch and compiles nothing."""
    from skillweave.errors import ConfigError

    name = os.environ.get("SKILLWEAVE_LOCAL_KERNEL") or "native"
    if name not in ("native", "torch"):
        raise ConfigError(f"SKILLWEAVE_LOCAL_KERNEL '{name}': expected native or torch")
    return name


KERNEL_DIR: Path | None = None  # where builds go instead of the cache folder's `kernels/` (tests)


def kernel_dir() -> Path:
    if KERNEL_DIR is not None:
        return KERNEL_DIR
    from skillweave.providers.local_model import cache_dir

    return cache_dir() / "kernels"


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def _cpu_flags() -> str:
    """The CPU's feature flags (-march=native compiles for them): /proc/cpuinfo's first `flags` line on Linux, the
    platform's description elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _key(source: bytes, compiler: list[str]) -> str:
    """The build's name: a hash of the source, the compiler's version line(s), the flags and the CPU's flags.
    Raises OSError / CalledProcessError when the compiler cannot run."""
    version = subprocess.run([*compiler, "--version"], capture_output=True, check=True, timeout=COMPILE_SECONDS).stdout
    digest = hashlib.sha256()
    for part in (source, version, " ".join(compiler).encode(), " ".join(FLAGS).encode(), _cpu_flags().encode()):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:24]


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _build(source: Path, library: Path, compiler: list[str]) -> None:
    """Compile `source` into `library` (a temporary file renamed into place), then its checksum beside it."""
    library.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=library.parent, prefix=library.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run([*compiler, *FLAGS, "-o", staging, str(source)], capture_output=True,
                              timeout=COMPILE_SECONDS)
        if done.returncode:
            raise RuntimeError(done.stderr.decode(errors="replace").strip().splitlines()[-1:] or "failed")
        checksum = _checksum(Path(staging))
        os.replace(staging, library)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    _write_atomic(library.with_suffix(".sha256"), checksum.encode())


def _open(library: Path):
    """The library if its checksum file matches its bytes and it answers the expected ABI, else None."""
    try:
        expected = library.with_suffix(".sha256").read_text().strip()
        if _checksum(library) != expected:
            return None
        lib = ctypes.CDLL(str(library))
        if lib.sw_abi() != ABI:
            return None
    except (OSError, AttributeError, ValueError):
        return None
    return lib


class Kernel:
    """The loaded library, with its argument types declared (every call converts and checks them)."""

    def __init__(self, lib, path: Path):
        import torch

        self.lib, self.path, self.float32 = lib, path, torch.float32
        f = lib.sw_attention
        i64, ptr = ctypes.c_long, ctypes.c_void_p
        f.argtypes = [i64, ptr, ptr, i64, i64, ptr, i64, i64, i64, ptr, i64, i64, i64, ptr,
                      ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float]
        f.restype = ctypes.c_int
        self.call = f

    def attention(self, rows, q, k, v, out, scale: float) -> None:
        """out [n, heads, dim] (contiguous float32) = attention of q [n, heads, dim] over the rows' cached keys
        k and values v [rows, kv heads, columns, dim] (float32, any strides but the last dimension's, which is 1);
        rows [rows, 3] int64 contiguous: each row's first query index, its count of queries (fed positions) and
        the position of its first fed token (query j of the row sees the columns before position + j + 1)."""
        n, heads, dim = q.shape
        for t in (q, k, v, out):
            if t.dtype != self.float32 or t.stride(-1) != 1:
                raise ValueError("native attention takes float32 tensors whose last dimension is contiguous")
        code = self.call(rows.shape[0], rows.data_ptr(), q.data_ptr(), q.stride(0), q.stride(1), k.data_ptr(),
                         k.stride(0), k.stride(1), k.stride(2), v.data_ptr(), v.stride(0), v.stride(1), v.stride(2),
                         out.data_ptr(), heads, k.shape[1], dim, scale)
        if code:
            raise RuntimeError(f"native attention failed ({code})")


def attention_kernel(folder: Path | None = None) -> Kernel | None:
    """The compiled kernel (built on first use into `folder`, by default `kernel_dir()`), or None where
    SKILLWEAVE_LOCAL_KERNEL=torch, there is no C compiler, or the build fails (logged at debug level). Loaded once
    per process and folder."""
    if kernel_setting() == "torch":
        return None
    folder = Path(folder) if folder is not None else kernel_dir()
    with _lock:
        if str(folder) in _loaded:
            return _loaded[str(folder)]
        kernel = None
        try:
            compiler = _compiler()
            source = SOURCE.read_bytes()
            library = folder / f"attention-{_key(source, compiler)}.so"
            lib = _open(library) if library.exists() else None
            if lib is None:
                _build(SOURCE, library, compiler)
                lib = _open(library)
            if lib is None:
                raise RuntimeError("the built library did not load")
            kernel = Kernel(lib, library)
        except Exception as exc:  # no compiler, a failed build, an unwritable cache: torch's attention
            log.debug("native attention unavailable, using torch's: %s", exc)
        _loaded[str(folder)] = kernel
        return kernel


def forget() -> None:
    """Drop this process's loaded kernels (tests: the next `attention_kernel()` looks at the cache again)."""
    with _lock:
        _loaded.clear()
