"""Where kernels run: the CuPy backend (a real GPU).

A backend gives :mod:`int4ref.gpu.ops` an array module (``xp``), allocation, host copies
and ``launch(file, expression, grid, block, args)``. :class:`CupyBackend` launches
through ``cupy.RawModule``; :class:`int4ref.gpu.emulator.EmulatorBackend` runs the same
kernels on the CPU for the test suite.
"""
from __future__ import annotations

from functools import lru_cache

from . import kernels


class NoDeviceError(RuntimeError):
    """No usable CUDA device (CuPy missing, no driver, or no GPU)."""


def device_status() -> tuple[bool, str]:
    """``(True, device description)`` when a CUDA device is usable, else ``(False, why not)``."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or CuPy failing to load its libraries
        return False, (f"CuPy is not installed or does not load ({type(exc).__name__}: {exc}); "
                       f"pip install 'int4ref[gpu]'")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device: {type(exc).__name__}: {exc}"
    if count == 0:
        return False, "no CUDA device: cupy.cuda.runtime.getDeviceCount() returned 0"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return True, f"{name} (sm_{props['major']}{props['minor']})"
    except Exception as exc:
        return False, f"CUDA device not usable: {type(exc).__name__}: {exc}"


def device_available() -> bool:
    return device_status()[0]


class CupyBackend:
    name = "cupy"

    def __init__(self):
        ok, why = device_status()
        if not ok:
            raise NoDeviceError(why)
        import cupy

        self.xp = cupy

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a):
        return self.xp.asnumpy(a)

    @staticmethod
    def ptr(a) -> int:
        return a.data.ptr

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def launch(self, name: str, expression: str, grid: tuple, block: tuple, args: tuple) -> None:
        kernels.function(name, expression)(tuple(grid), tuple(block), tuple(args))


@lru_cache(maxsize=1)
def cupy_backend() -> CupyBackend:
    return CupyBackend()
