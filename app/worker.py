"""One worker thread per session: it pulls snapshots from the engine's generators and hands the
UI plain numpy.

The worker owns every engine object of a session (``Evolution`` generators, runs, targets); the
UI thread only reads the latest snapshot of each :class:`Lane` and renders it at a bounded rate.
Several lanes (the live run and the two runs of a side-by-side comparison) advance round-robin
in the same thread, and short jobs (contours at a replayed time, drawing samples) run between
steps, so no engine object is ever used from two threads.
"""
from __future__ import annotations

import collections
import os
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mne_core import Status

from app.fields import Field, clip_proj, field_at, has_exact_evolution, initial_field
from app.settings import SPEEDS

log = logging.getLogger("app.worker")

#: Most snapshots a lane keeps for replay; beyond it every second one is dropped.
MAX_HISTORY = 1500
#: Seconds between contour updates of a running lane.
CONTOUR_PERIOD = 0.25
#: Seconds between two frames of a played recording (51 frames of the default preset: ≈ 5 s).
PLAYBACK_FRAME_S = 0.1
#: Longest playback of a recording (s): longer recordings play faster.
PLAYBACK_MAX_S = 8.0
#: Seconds between two full N×N NTK spectra of a running lane (≈ 30 ms each at N = 512).
SPECTRUM_PERIOD = 0.5
#: Largest N whose full NTK spectrum is drawn (an N×N eigendecomposition: 2048 takes ≈ 1 s here).
MAX_SPECTRUM_POINTS = 2048


@dataclass
class Lane:
    """One evolution followed by the worker, and everything the UI reads from it."""

    key: str
    factory: Callable[..., Any]    # factory(target) builds the Evolution (in the worker: it may compile)
    T: float = 1.0
    label: str = ""
    proj: tuple = (0, 1)
    state: str = "queued"          # queued | waiting | preparing | running | done | warning | failed | stopped
    paused: bool = False
    steps_allowed: int = 0         # single steps requested while paused
    stage: str = ""                # prepare stage, e.g. "mala"
    stage_fraction: float = 0.0
    latest: Any = None             # latest Snapshot
    preview_points: Any = None     # data-free start points, shown while the initial fit runs
    history: list = field(default_factory=list)   # accepted snapshots (and the t = 0 one)
    diag: dict = field(default_factory=lambda: {k: [] for k in
                                                ("t", "dt", "residual", "rejected", "energy_error")})
    field_: Field | None = None
    message: str = ""              # failure reason
    version: int = 0
    field_version: int = 0
    target: Any = None
    extent: tuple | None = None
    grid: np.ndarray | None = None
    has_exact: bool = False
    dim: int = 2
    evolution: Any = None
    spec: dict | None = None       # target spec (the first frame needs only the target)
    previous: Any = None           # the lane this one replaced (restored if this one cannot start)
    notice: str = ""               # e.g. "the new run could not start; showing the last run"
    started: float = field(default_factory=time.perf_counter)
    first_step_at: float | None = None
    stages: list = field(default_factory=list)    # prepare stages seen (empty when the start was reused)
    start_reused: bool = False     # prepared from the data-free start of an earlier run (same start_key)
    ticket: Any = None             # the compute pool's ticket (app.pool.Ticket) while it waits or runs
    full_spectrum: Any = None      # (t, eigenvalues of the full N×N NTK) at the newest computed time
    spectra: list = field(default_factory=list)   # the (t, eig) computed so far (a recording keeps them)
    spectrum_version: int = 0
    _last_spectrum: float = 0.0
    recording: Any = None          # app.recordings.Recording played by this lane (no evolution)
    requested_proj: tuple = (0, 1)  # the projection asked for at the start (the contours' one)
    fields: list = field(default_factory=list)    # contour frames shown so far (a recording keeps them)
    _frame: int = 0                # next frame of the recording
    _gen: Any = None
    _last_field: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def recorded(self) -> bool:
        """The lane plays a recording of these settings (nothing is computed)."""
        return self.recording is not None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "waiting", "preparing", "running")

    @property
    def queue_position(self) -> int:
        """The place in the server's queue while waiting for a compute slot (0: not waiting)."""
        ticket = self.ticket
        return ticket.position if ticket is not None and self.state == "waiting" else 0

    def release(self):
        """Give back the compute slot (or the place in the queue); ask the evolution to stop."""
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            ticket.release()
        evo = self.evolution
        if evo is not None and self.state == "stopped":
            try:
                evo.request_stop()
            except Exception:
                pass

    def history_diag(self) -> dict[str, np.ndarray]:
        with self.lock:
            return {k: np.asarray(v, dtype=float) for k, v in self.diag.items()}


class SessionWorker:
    """The single worker thread of one session."""

    _count = iter(range(1, 1 << 62))

    def __init__(self, name: str | None = None, pool: Any = None):
        self.name = name or f"mne-worker-{next(SessionWorker._count)}"
        #: the server's compute pool (app.pool.Pool): a lane waits for a slot before it prepares;
        #: None runs every lane at once (notebooks, tests)
        self.pool = pool
        self.lanes: dict[str, Lane] = {}
        self.speed = "max"
        self._cond = threading.Condition()
        self._jobs: collections.deque = collections.deque()
        self._closed = False
        self.closed_at: float | None = None  # time.time() of close()
        self._rr = 0
        #: ``() -> bool``: True once nobody watches this session any more (its browser tab is
        #: gone); the thread then closes itself between two steps
        self.abandoned: Any = None
        #: the last data-free start (mne_core.evolution.Start) of each lane; a new run whose
        #: start_key matches one of them skips the tempering and the initial fit
        self.starts: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        if pool is not None:
            pool.on_change(self._wake)
        self._thread.start()

    def _wake(self):
        """The pool granted or released a slot: look again (never blocks: another worker may hold
        the pool's attention; a busy worker looks again within 0.2 s anyway)."""
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    # --- control (any thread) ---------------------------------------------------------------
    def start_lane(self, key: str, factory: Callable[..., Any], *, T: float, spec: dict | None = None,
                   label: str = "", proj=(0, 1), paused: bool = False, steps: int = 0,
                   recording: Any = None) -> Lane:
        """Follow the evolution ``factory()`` builds in lane ``key`` (replacing what ran there;
        if the new one cannot start, the old one is restored with a notice).  With a
        ``recording`` (:class:`app.recordings.Recording` of the same settings) the lane plays it
        at once instead: no compute slot, no evolution."""
        lane = Lane(key=key, factory=factory, T=float(T), label=label, proj=tuple(proj), paused=paused,
                    steps_allowed=steps, spec=spec, recording=recording, requested_proj=tuple(proj))
        with self._cond:
            old = self.lanes.get(key)
            if old is not None and old.active:
                old.state = "stopped"
            if old is not None:
                old.release()
                lane.previous = old if old.latest is not None else old.previous
                old.previous = None
            self.lanes[key] = lane
            self._cond.notify_all()
        return lane

    def pause(self, key: str, paused: bool = True):
        with self._cond:
            if key in self.lanes:
                self.lanes[key].paused = paused
            self._cond.notify_all()

    def step(self, key: str):
        with self._cond:
            lane = self.lanes.get(key)
            if lane is not None:
                lane.paused = True
                lane.steps_allowed += 1
            self._cond.notify_all()

    def stop_lane(self, key: str):
        with self._cond:
            lane = self.lanes.pop(key, None)
            if lane is not None and lane.active:
                lane.state = "stopped"
            if lane is not None:
                lane.release()
            self._cond.notify_all()

    def submit(self, fn: Callable[[], Any], done: Callable[[Any, str | None], None] | None = None):
        """Run ``fn()`` in the worker between steps; ``done(result, error)`` is called there after."""
        with self._cond:
            self._jobs.append((fn, done))
            self._cond.notify_all()

    def close(self, timeout: float = 2.0):
        """Stop the thread (it finishes the step it is in: a step, or a chunk of the fit) and
        drop every lane, start and job, so that the session's data can be freed.  ``timeout``
        0 returns at once (the thread ends by itself)."""
        with self._cond:
            if not self._closed:
                self.closed_at = time.time()
            self._closed = True
            lanes = list(self.lanes.values())
            for lane in lanes:
                if lane.active:
                    lane.state = "stopped"
                lane.release()
                lane.previous = None
            self.lanes.clear()
            self.starts.clear()
            self._jobs.clear()
            self._cond.notify_all()
        if self.pool is not None:
            self.pool.remove_listener(self._wake)
        if timeout and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _abandoned(self) -> bool:
        if self.abandoned is None:
            return False
        try:
            return bool(self.abandoned())
        except Exception:
            return False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread ---------------------------------------------------------------------------
    def _runnable(self) -> Lane | None:
        lanes = [lane for lane in self.lanes.values()
                 if lane.state in ("queued", "preparing")
                 or (lane.state == "waiting" and (lane.ticket is None or lane.ticket.granted))
                 or (lane.state == "running" and (not lane.paused or lane.steps_allowed > 0))]
        if not lanes:
            return None
        self._rr = (self._rr + 1) % len(lanes)
        return lanes[self._rr]

    def _loop(self):
        _lower_priority()
        while True:
            if not self._closed and self._abandoned():
                self.close(timeout=0)
            with self._cond:
                if self._closed:
                    log.info("worker %s stopped %.3f s after close (at %.3f)", self._thread.name,
                             time.time() - (self.closed_at or time.time()), time.time())
                    return
                job = self._jobs.popleft() if self._jobs else None
                lane = None if job else self._runnable()
                if job is None and lane is None:
                    self._cond.wait(0.2)
                    continue
            if job is not None:
                fn, done = job
                try:
                    result, error = fn(), None
                except Exception as err:  # shown inline by the caller
                    result, error = None, _message(err)
                if done is not None:
                    try:
                        done(result, error)
                    except Exception:
                        traceback.print_exc()
                continue
            self._advance(lane)
            delay = SPEEDS.get(self.speed, 0.0)
            if delay and lane.state == "running":
                with self._cond:
                    self._cond.wait(delay)

    def _advance(self, lane: Lane):
        try:
            if lane.state == "queued":
                self._begin(lane)
            elif lane.state == "waiting":
                lane.state = "preparing"
                lane.version += 1
            elif lane.state == "preparing":
                self._prepare(lane)
            else:
                self._step(lane)
        except Exception as err:  # a failure ends this lane only; the last data stays
            if lane.state == "stopped":
                return
            message = _message(err)
            prev = lane.previous
            if lane.latest is None and prev is not None:
                # restore the last run first, so the page never shows the new lane as failed
                with self._cond:
                    if self.lanes.get(lane.key) is lane:
                        prev.notice = message
                        if prev.state in ("queued", "preparing", "running"):
                            prev.state = "stopped"
                        prev.version += 1
                        prev.field_version += 1
                        self.lanes[lane.key] = prev
            lane.state = "failed"
            lane.message = message
            lane.release()
            lane.version += 1

    def _begin(self, lane: Lane):
        """Before prepare: the target's contours at t = 0 on fixed axes (the first frame); then
        the lane asks the pool for a compute slot (state ``waiting`` until it has one).  A
        recorded lane shows its first frame and starts playing."""
        if lane.recording is not None:
            rec = lane.recording
            lane.dim, lane.proj = rec.dim, tuple(rec.proj)
            lane.field_ = rec.fields[0]
            lane.extent = lane.field_.extent
            lane.field_version += 1
            lane.state = "running"
            self._play(lane)
            return
        lane.state = "preparing"
        if lane.spec is not None:
            from mne_core import target_from_spec

            lane.target = target_from_spec(lane.spec)
        else:
            lane.evolution = lane.factory(None)
            lane.target = lane.evolution.target
        lane.dim = int(lane.target.dim)
        lane.proj = clip_proj(lane.proj, lane.dim)
        lane.field_, lane.grid = initial_field(lane.target, lane.proj)
        lane.extent = lane.field_.extent
        lane.field_version += 1
        if self.pool is not None:
            ticket = self.pool.request(lane.label or lane.key)
            with self._cond:
                if lane.state == "preparing" and not self._closed:
                    lane.ticket, lane.state = ticket, "waiting"
                else:  # stopped meanwhile (another thread)
                    ticket.release()
        lane.version += 1

    def _prepare(self, lane: Lane):
        if lane.evolution is None:
            lane.evolution = (self.pool.evolution(lane.factory, lane.target) if self.pool is not None
                              else lane.factory(lane.target))
            lane.version += 1
            return
        def progress(stage, fraction):
            lane.stage, lane.stage_fraction = str(stage), float(fraction)
            if not lane.stages or lane.stages[-1] != lane.stage:
                lane.stages.append(lane.stage)
            if lane.preview_points is None:
                lane.preview_points = getattr(lane.evolution, "start_points", None)
            lane.version += 1
            if lane.state == "stopped" or self._closed:
                raise _Stopped()

        start = None if getattr(lane.evolution, "remote", False) else self.start_for(lane)
        try:
            snap = lane.evolution.prepare(progress=progress, start=start)
        except _Stopped:
            return
        lane.start_reused = start is not None
        if getattr(lane.evolution, "last_start", None) is not None:
            self.starts[lane.key] = lane.evolution.last_start
        if lane.state == "stopped":
            return
        lane.has_exact = has_exact_evolution(lane.target)
        self._record(lane, snap)
        self._update_field(lane, snap.t)
        self._update_spectrum(lane, snap.t)
        lane._gen = lane.evolution.steps()
        lane.state = "running"

    def start_for(self, lane: Lane):
        """A kept data-free start that fits the lane's Evolution (its own lane's first, then any
        other lane's), or None."""
        from mne_core.config import start_key

        key = start_key(lane.evolution.config)
        for name in [lane.key] + [k for k in self.starts if k != lane.key]:
            start = self.starts.get(name)
            if start is not None and start.key == key:
                return start
        return None

    def _play(self, lane: Lane):
        """The next frame of a recording (paced: PLAYBACK_FRAME_S apart at the fastest speed)."""
        rec = lane.recording
        if lane._frame >= len(rec.snapshots):
            lane.state, lane.message = rec.state, rec.message
            lane.version += 1
            return
        snap = rec.snapshots[lane._frame]
        lane._frame += 1
        if lane._frame > 1 and lane.first_step_at is None:
            lane.first_step_at = time.perf_counter()
        self._record(lane, snap)
        f = rec.field_at(float(snap.t))
        if f is not lane.field_:
            lane.field_ = f
            lane.field_version += 1
        spec = rec.spectrum_at(float(snap.t))
        if spec is not None and spec is not lane.full_spectrum:
            lane.full_spectrum = spec
            lane.spectrum_version += 1
        with self._cond:  # the whole recording plays in at most PLAYBACK_MAX_S
            self._cond.wait(min(PLAYBACK_FRAME_S, PLAYBACK_MAX_S / max(1, len(rec.snapshots))))

    def _step(self, lane: Lane):
        if lane.steps_allowed > 0:
            lane.steps_allowed -= 1
        if lane.recording is not None:
            self._play(lane)
            return
        try:
            snap = next(lane._gen)
        except StopIteration:
            self._finish(lane)
            return
        if lane.first_step_at is None:
            lane.first_step_at = time.perf_counter()
        self._record(lane, snap)
        now = time.perf_counter()
        if snap.accepted and now - lane._last_field > CONTOUR_PERIOD:
            self._update_field(lane, snap.t)
        if snap.accepted and now - lane._last_spectrum > SPECTRUM_PERIOD:
            self._update_spectrum(lane, snap.t)
        if snap.status.finished:
            self._finish(lane)

    def _finish(self, lane: Lane):
        evo = lane.evolution
        if lane.state == "stopped" or evo.status == Status.INTERRUPTED:
            lane.state = "stopped"  # cut short: shown as it is, never kept as a recording
            lane.release()
            lane.version += 1
            return
        if lane.latest is not None:
            self._update_field(lane, lane.latest.t)
            self._update_spectrum(lane, lane.latest.t)
        if evo.status == Status.FAILED:
            lane.state, lane.message = "failed", evo.message
        elif evo.status == Status.WARNING:
            lane.state, lane.message = "warning", evo.message
        else:
            lane.state = "done"
        lane.release()
        lane.version += 1
        self._keep_recording(lane)

    @staticmethod
    def _keep_recording(lane: Lane):
        """A live run that ended (done, warning or failed) becomes this server's recording of its
        settings, for every session that asks for them later."""
        try:
            from app import recordings

            rec = recordings.record_lane(lane)
            if rec is not None:
                recordings.store(rec)
        except Exception:  # a recording is a convenience: never fail a run for it
            traceback.print_exc()

    def _record(self, lane: Lane, snap):
        with lane.lock:
            lane.latest = snap
            if snap.accepted or not lane.history:
                lane.history.append(snap)
                if len(lane.history) > MAX_HISTORY:
                    lane.history[1::2] = []
                d = lane.diag
                d["t"].append(float(snap.t))
                d["dt"].append(float(snap.dt))
                d["residual"].append(float(snap.residual))
                d["rejected"].append(float(snap.num_rejected))
                err = snap.energy_error
                d["energy_error"].append(np.nan if err is None else float(err))
            lane.version += 1

    def _update_field(self, lane: Lane, t: float):
        lane.field_ = self.field_at(lane, t)
        _keep(lane.fields, lane.field_)
        lane.field_version += 1
        lane._last_field = time.perf_counter()

    def _update_spectrum(self, lane: Lane, t: float):
        """The full N×N NTK spectrum at the recorded step nearest t (local runs with N ≤
        MAX_SPECTRUM_POINTS; a failure leaves the last one)."""
        run = getattr(lane.evolution, "run", None)
        if run is None or not hasattr(run, "ntk_spectrum") or lane.latest is None \
                or np.shape(lane.latest.points)[0] > MAX_SPECTRUM_POINTS:
            return
        try:
            lane.full_spectrum = run.ntk_spectrum(t)
        except Exception:
            return
        finally:  # the period counts from the end of the eigendecomposition (≈ 1 s at N = 2048)
            lane._last_spectrum = time.perf_counter()
        _keep(lane.spectra, lane.full_spectrum)
        lane.spectrum_version += 1

    def field_at(self, lane: Lane, t: float) -> Field:
        """Model and exact energies on the lane's grid at time t (call in the worker)."""
        if lane.recording is not None:
            return lane.recording.field_at(t)
        if hasattr(lane.evolution, "field_at"):  # a remote evolution computes them where it runs
            return lane.evolution.field_at(lane.grid, lane.field_, t, lane.has_exact)
        return field_at(lane.evolution.run, lane.target, lane.grid, lane.field_, t, lane.has_exact)


_WARM = {"started": False}


def warm_up(config=None, evolve: bool = False) -> threading.Thread | None:
    """Once per process, in the background: the default preset's first frame (target contours),
    and with ``evolve`` one prepare + step of its shapes so that sessions find the compiled
    functions in JAX's cache (off by default: on 2 cores the compile holds the GIL and delays the
    first session's page by seconds)."""
    if _WARM["started"]:
        return None
    _WARM["started"] = True

    def work():
        try:
            import mne_core

            from app.settings import Settings

            cfg = config or Settings().to_config()
            initial_field(mne_core.target_from_spec(cfg.target))
            if config is None:  # the recording /watch and the first page play
                from app.watch import default_recording

                default_recording()
            if not evolve:
                return
            evo = mne_core.Evolution(cfg)
            evo.prepare()
            next(iter(evo.steps()), None)
        except Exception:
            traceback.print_exc()

    thread = threading.Thread(target=work, name="mne-warm-up", daemon=True)
    thread.start()
    return thread


def _keep(frames: list, item) -> None:
    """Append a frame a recording may keep; beyond 4 × MAX_FIELDS drop every second one (first and
    last kept), so a long run holds a bounded, evenly spread set."""
    from app.recordings import MAX_FIELDS

    frames.append(item)
    if len(frames) > 4 * MAX_FIELDS:
        frames[1:-1:2] = []


#: Scheduling niceness of worker threads (Linux; ``MNE_WORKER_NICE``, default 0).  With 10, the
#: server's event loop, which builds and updates every page, goes first when the cores are busy.
#: Before the explorer's plot updates were paced (``app.pacing``) that helped (30 /watch pages
#: opened during a live run moved after 8.9 s instead of 11.5 s); with pacing it does not (4.65 s
#: against 4.20 s), and a run whose tab closes finishes its step more slowly (closed tab →
#: stopped: median 0.73 s instead of 0.40 s, max 1.7 s), so it is off by default
#: (``benchmarks/results/app_load.md``).
WORKER_NICE = int(os.environ.get("MNE_WORKER_NICE", "0"))


def _lower_priority() -> None:
    if WORKER_NICE <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except OSError:
        pass


class _Stopped(Exception):
    pass


def _message(err: Exception) -> str:
    name = type(err).__name__
    text = str(err).strip() or name
    if isinstance(err, MemoryError):
        return "out of memory: reduce n_points, width or depth"
    clean = ("ConfigError", "TargetSpecError", "ExpressionError", "ExpressionTargetError", "EvolutionError",
             "ValueError")
    return text if name in clean else f"{name}: {text}"
