"""Keep the calling thread's alternate signal stack from being left dangling by OpenVINO.

OpenVINO's CPU plugin gives the thread that creates it a larger alternate signal stack (room for
AMX state) and, when it is destroyed, puts back the stack it replaced, then unmaps its own. Each
`ov.Core` creates its own plugin, and NNCF's calibration makes several; when two are destroyed in
the order they were made, the second puts back the first's stack, already unmapped. Python runs
its signal handlers on the alternate stack, so the next signal the thread handles (Scalene's
samples, Ctrl-C, the build's SIGTERM) kills the process with SIGSEGV instead.

`kept` puts the thread's own stack back as soon as OpenVINO has set its own: a plugin destroyed
later finds a stack that is not its own and leaves it alone.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _Stack(ctypes.Structure):
    """Linux's `stack_t`."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


SS_ONSTACK, SS_DISABLE = 1, 2
LINUX = sys.platform.startswith("linux")  # the plugin swaps stacks on Linux only
_LIBC = ctypes.CDLL(None, use_errno=True) if LINUX else None


def current() -> tuple[int | None, int, int]:
    """The calling thread's alternate signal stack: (address, flags, size)."""
    stack = _read()
    return stack.ss_sp, stack.ss_flags, stack.ss_size


@contextmanager
def kept() -> Iterator[None]:
    """Run the block, then give the thread back the alternate signal stack it had before."""
    before = _read()
    try:
        yield
    finally:
        if _LIBC is not None and current() != (before.ss_sp, before.ss_flags, before.ss_size):
            before.ss_flags &= ~SS_ONSTACK  # reported while a handler runs on it; none does here
            if _LIBC.sigaltstack(ctypes.byref(before), None) != 0:  # the next signal would crash
                raise OSError(ctypes.get_errno(), "could not restore this thread's signal stack "
                                                  "after OpenVINO replaced it")


def _read() -> _Stack:
    """The thread's stack_t (on other systems: none, since nothing swaps it there)."""
    stack = _Stack(None, SS_DISABLE, 0)
    if _LIBC is not None and _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack failed")
    return stack
