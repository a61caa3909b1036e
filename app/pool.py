"""A bounded compute pool per server: at most ``slots`` live evolutions at once, the rest queued.

Every session's worker (:class:`app.worker.SessionWorker`) asks the server's pool for a
:class:`Ticket` before it prepares or steps an evolution, and gives it back when the run ends,
is stopped or the session closes.  While it waits, :attr:`Ticket.position` is its place in the
queue (1 = next), which the page shows.  Tickets are granted first come, first served.

Two backends, one interface (:meth:`Pool.request` and :meth:`Pool.evolution`):

- :class:`ThreadPool` (the default): evolutions run in the sessions' own worker threads, in this
  process; the pool only bounds how many run at once (default: one per CPU core).
- :class:`DaskPool`: evolutions run on a Dask distributed cluster (an existing scheduler address,
  or a ``LocalCluster``), each as a Dask *actor* that holds the engine objects on a Dask worker;
  the session pulls its snapshots back in small chunks of steps and the contour fields it needs,
  so the session's thread only waits on the network.  Stopping a run is simply not asking for
  the next chunk (and releasing the actor).

Nothing here computes physics: the pool hands out slots and forwards calls to the engine.
"""
from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Callable

__all__ = ["Ticket", "Pool", "ThreadPool", "DaskPool", "server_pool", "set_server_pool", "default_slots"]


def default_slots() -> int:
    """Live evolutions per server: ``MNE_POOL_SLOTS`` if set, else one per CPU core."""
    env = os.environ.get("MNE_POOL_SLOTS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Ticket:
    """One evolution's claim on a slot of a :class:`Pool` (thread-safe to read)."""

    __slots__ = ("pool", "owner", "number", "granted", "released", "__weakref__")

    def __init__(self, pool: "Pool", owner: str, number: int):
        self.pool, self.owner, self.number = pool, owner, number
        self.granted = False
        self.released = False

    @property
    def position(self) -> int:
        """0 when running (or released), else the place in the queue (1 = next to run)."""
        return self.pool.position(self)

    def release(self) -> None:
        """Give the slot (or the place in the queue) back; idempotent."""
        self.pool.release(self)

    def __repr__(self):
        return f"Ticket({self.owner!r}, #{self.number}, granted={self.granted}, released={self.released})"


class Pool:
    """Admission control: ``slots`` tickets granted at once, the rest wait in FIFO order."""

    def __init__(self, slots: int | None = None):
        self.slots = int(slots) if slots is not None else default_slots()
        if self.slots < 1:
            raise ValueError("a pool needs at least one slot")
        self._lock = threading.Lock()
        self._running: list[Ticket] = []
        self._waiting: list[Ticket] = []
        self._count = itertools.count(1)
        self._listeners: list[Callable[[], None]] = []

    # --- admission --------------------------------------------------------------------------
    def request(self, owner: str = "") -> Ticket:
        """A ticket: granted at once when a slot is free, else queued."""
        with self._lock:
            ticket = Ticket(self, owner, next(self._count))
            self._waiting.append(ticket)
            self._admit()
        self._notify()
        return ticket

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            if ticket in self._running:
                self._running.remove(ticket)
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._admit()
        self._notify()

    def position(self, ticket: Ticket) -> int:
        with self._lock:
            if ticket.granted or ticket.released:
                return 0
            try:
                return self._waiting.index(ticket) + 1
            except ValueError:
                return 0

    def _admit(self):
        while self._waiting and len(self._running) < self.slots:
            ticket = self._waiting.pop(0)
            ticket.granted = True
            self._running.append(ticket)

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (from any thread) whenever a ticket is granted or released; the session
        workers use it to wake up instead of polling."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _notify(self):
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn()
            except Exception:
                pass

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    # --- where an evolution runs ------------------------------------------------------------
    def evolution(self, factory: Callable[..., Any], target: Any = None) -> Any:
        """The evolution object the session's worker drives (``prepare``, ``steps``,
        ``request_stop``, ``target``, ``config``, ``status``, ``message``)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ThreadPool(Pool):
    """Evolutions in the sessions' worker threads of this process, at most ``slots`` at once."""

    def evolution(self, factory, target=None):
        return factory(target)


class DaskPool(Pool):
    """Evolutions on a Dask distributed cluster.

    ``address`` is a scheduler address (``tcp://host:8786``), a ``distributed.Client`` or a
    ``LocalCluster``; ``slots`` defaults to the cluster's total worker threads.  Every Dask
    worker must be able to import ``mne_core`` and ``app`` (the same environment as the server).
    """

    def __init__(self, address: Any, slots: int | None = None, chunk: int = 4):
        from distributed import Client

        if isinstance(address, Client):
            self.client, self._own_client = address, False
        else:
            self.client, self._own_client = Client(address, set_as_default=False), True
        if slots is None:
            slots = max(1, sum(self.client.nthreads().values()))
        super().__init__(slots)
        self.chunk = int(chunk)

    def evolution(self, factory, target=None):
        config = getattr(factory, "config", None)
        if config is None:
            raise ValueError("a DaskPool needs a factory with a .config (app.main.EvolutionFactory)")
        return RemoteEvolution(self.client, config, target, chunk=self.chunk)

    def close(self):
        if self._own_client:
            self.client.close()


class _Actor:
    """Runs on a Dask worker: one Evolution and everything it needs, answering in plain data."""

    def __init__(self, config):
        import mne_core

        self.evo = mne_core.Evolution(config)
        self.gen = None
        self.done = False

    def prepare(self):
        snap = self.evo.prepare()
        self.gen = self.evo.steps()
        return snap, _state(self.evo)

    def steps(self, n: int):
        """Up to ``n`` snapshots (fewer at the end of the run) and the evolution's status."""
        out = []
        if self.gen is not None and not self.done:
            for _ in range(max(1, int(n))):
                try:
                    snap = next(self.gen)
                except StopIteration:
                    self.done = True
                    break
                out.append(snap)
                if snap.status.finished:
                    self.done = True
                    break
        return out, self.done, _state(self.evo)

    def stop(self):
        self.evo.request_stop()
        return True

    def field_at(self, grid, like, t, has_exact):
        from app.fields import field_at

        return field_at(self.evo.run, self.evo.target, grid, like, t, has_exact)


def _state(evo):
    return evo.status, evo.message, getattr(evo, "start_points", None)


class RemoteEvolution:
    """The session-side handle of an evolution running in a Dask actor; it looks like an
    ``mne_core.Evolution`` to the worker (``prepare``, ``steps``, ``request_stop``, ``status``,
    ``message``, ``target``, ``config``) and adds ``field_at`` (contours computed remotely).
    ``run`` is None: exports and sampling need a local run."""

    remote = True

    def __init__(self, client, config, target=None, chunk: int = 4):
        import mne_core

        self.client, self.config, self.chunk = client, config, int(chunk)
        self.target = target if target is not None else mne_core.target_from_spec(config.target)
        self.status = mne_core.Status.READY
        self.message = ""
        self.start_points = None
        self.last_start = None
        self.run = None
        self._stop = threading.Event()
        # keep the future: the actor lives on its worker only while its future is held
        self._future = client.submit(_Actor, config, actor=True)
        self._actor = self._future.result()

    def prepare(self, progress=None, *, start=None):
        if progress is not None:
            progress("remote (Dask)", 0.0)
        snap, state = self._actor.prepare().result()
        self.status, self.message, self.start_points = state
        return snap

    def request_stop(self):
        self._stop.set()
        try:
            self._actor.stop()
        except Exception:
            pass

    def steps(self):
        done = False
        while not done:
            if self._stop.is_set():
                self._actor.stop().result()
            snaps, done, state = self._actor.steps(self.chunk).result()
            self.status, self.message, _ = state
            yield from snaps
            if not snaps:
                return

    def field_at(self, grid, like, t, has_exact):
        return self._actor.field_at(grid, like, t, has_exact).result()

    def close(self):
        self._actor = self._future = None


_SERVER_POOL: dict[str, Pool | None] = {"pool": None}
_SERVER_LOCK = threading.Lock()


def server_pool() -> Pool:
    """This server process's pool: a :class:`DaskPool` on the scheduler named by
    ``MNE_DASK_SCHEDULER`` (e.g. ``tcp://10.0.0.5:8786``) if set, else a :class:`ThreadPool` of
    :func:`default_slots` (``MNE_POOL_SLOTS``), unless :func:`set_server_pool` chose another."""
    with _SERVER_LOCK:
        if _SERVER_POOL["pool"] is None:
            address = os.environ.get("MNE_DASK_SCHEDULER", "").strip()
            _SERVER_POOL["pool"] = DaskPool(address) if address else ThreadPool()
        return _SERVER_POOL["pool"]


def set_server_pool(pool: Pool | None) -> None:
    with _SERVER_LOCK:
        _SERVER_POOL["pool"] = pool
