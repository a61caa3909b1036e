"""Keeping a long-lived server's memory near its baseline (glibc only; a no-op elsewhere).

A served session lives in its own worker thread.  glibc gives threads their own malloc arenas
(up to 8 per core) and keeps freed memory in them, so a server that has seen many sessions keeps
their peak memory although Python freed it (measured: RSS +32 % after 50 sessions, with every
session's objects collected).  Two standard remedies:

- :func:`limit_malloc_arenas`: ``mallopt(M_ARENA_MAX, 2)`` at start (as ``MALLOC_ARENA_MAX=2``);
- :func:`trim_soon`: ``malloc_trim(0)`` shortly after a session closes, which hands the free
  pages of every arena back to the system (a few milliseconds).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

__all__ = ["limit_malloc_arenas", "trim", "trim_soon", "ARENAS", "TRIM_DELAY_S"]

#: malloc arenas a server process may use (glibc's default is 8 per core).
ARENAS = 2
#: Seconds after a session closes before memory is trimmed (its worker thread ends first).
TRIM_DELAY_S = 2.0
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _libc()
_PENDING = {"timer": None}
_LOCK = threading.Lock()


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (True when applied)."""
    return bool(_LIBC is not None and _LIBC.mallopt(_M_ARENA_MAX, int(arenas)) == 1)


def trim() -> bool:
    """Return free heap pages to the system now (True when something was released)."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


def trim_soon(delay: float = TRIM_DELAY_S) -> None:
    """:func:`trim` once, ``delay`` seconds from now (calls in the meantime share it)."""
    if _LIBC is None:
        return
    with _LOCK:
        if _PENDING["timer"] is not None:
            return
        def run():
            with _LOCK:
                _PENDING["timer"] = None
            trim()
        timer = threading.Timer(delay, run)
        timer.daemon = True
        _PENDING["timer"] = timer
        timer.start()
