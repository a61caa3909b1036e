"""The server's compute pool (app/pool.py): bounded live evolutions, a FIFO queue whose place each
page shows, slots given back when a run ends or a session closes, and the Dask backend behind the
same interface (a LocalCluster streams an evolution's snapshots to a session)."""
from __future__ import annotations

import threading
import time

import pytest

from app.pool import Pool, ThreadPool

SMALL = dict(n_points=64, T=0.3, width=16, sketch_rank=32, fit_points=256, fit_steps=60, gn_steps=2,
             mala_steps=5, autorun=False)

pytestmark = pytest.mark.xdist_group("app_model")


def _wait(cond, timeout=400.0, every=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if every is not None:
            every()
        if cond():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


# ------------------------------------------------------------------------------- admission
def test_tickets_fifo_positions_and_release():
    pool = ThreadPool(slots=2)
    a, b, c, d = (pool.request(n) for n in "abcd")
    assert a.granted and b.granted and not c.granted and not d.granted
    assert (a.position, b.position, c.position, d.position) == (0, 0, 1, 2)
    assert pool.running == 2 and pool.waiting == 2
    d.release()  # leaving the queue moves nobody ahead of it
    assert c.position == 1 and pool.waiting == 1
    a.release()
    assert c.granted and c.position == 0 and pool.running == 2
    a.release()  # idempotent
    assert pool.running == 2
    b.release(), c.release()
    assert pool.running == 0 and pool.waiting == 0


def test_pool_needs_a_slot_and_reads_the_environment(monkeypatch):
    from app.pool import default_slots

    with pytest.raises(ValueError):
        Pool(slots=0)
    monkeypatch.setenv("MNE_POOL_SLOTS", "3")
    assert default_slots() == 3 and ThreadPool().slots == 3


def test_listeners_hear_grants_from_other_threads():
    pool = ThreadPool(slots=1)
    heard = threading.Event()
    a = pool.request("a")
    b = pool.request("b")
    pool.on_change(heard.set)
    threading.Thread(target=a.release).start()
    assert heard.wait(5) and b.granted


# ------------------------------------------------------------------------------- sessions
def test_two_sessions_on_one_slot_run_one_after_the_other():
    """Pool size 1: the second session waits (its page says its place in the queue), starts
    only when the first run has ended, and both finish."""
    from app.main import MNEExplorer

    pool = ThreadPool(slots=1)
    a = MNEExplorer(live=False, pool=pool, seed=1, **SMALL)
    b = MNEExplorer(live=False, pool=pool, seed=2, **SMALL)
    try:
        a.step()  # a holds the slot: prepared and paused after one step
        lane_a = a.worker.lanes["main"]
        _wait(lambda: lane_a.state == "running" and lane_a.steps_allowed == 0, every=a.render)
        assert b.run()
        lane_b = b.worker.lanes["main"]
        _wait(lambda: lane_b.state == "waiting", every=b.render)
        b.render()
        assert lane_b.queue_position == 1
        assert "place 1 in the queue" in b.phase.object
        assert pool.running == 1 and pool.waiting == 1
        time.sleep(0.5)
        assert lane_b.state == "waiting" and lane_b.queue_position == 1
        assert a.run()  # resume a; b starts only when it has ended
        while lane_a.active:
            assert lane_b.state == "waiting" and lane_b.latest is None, (lane_a.state, lane_b.state)
            a.render(), b.render()
            time.sleep(0.02)
        assert lane_a.state in ("done", "warning"), lane_a.message
        _wait(lambda: lane_b.state in ("done", "warning", "failed"), every=b.render)
        assert lane_b.state in ("done", "warning"), lane_b.message
        assert lane_b.first_step_at > lane_a.first_step_at
        assert pool.running == 0 and pool.waiting == 0
    finally:
        a.close()
        b.close()


def test_closing_a_session_gives_its_slot_to_the_next_one():
    from app.main import MNEExplorer

    pool = ThreadPool(slots=1)
    a = MNEExplorer(live=False, pool=pool, seed=1, **{**SMALL, "T": 50.0})
    b = MNEExplorer(live=False, pool=pool, seed=2, **SMALL)
    try:
        assert a.run()
        _wait(lambda: a.worker.lanes["main"].state in ("preparing", "running"))
        assert b.run()
        _wait(lambda: b.worker.lanes["main"].state == "waiting")
        assert pool.running == 1
        a.close()
        assert not a.worker.alive and a.worker.lanes == {}
        _wait(lambda: b.worker.lanes["main"].state in ("preparing", "running", "done", "warning"))
    finally:
        a.close()
        b.close()
    assert pool.running == 0 and pool.waiting == 0


def test_closing_a_running_session_stops_its_thread_quickly():
    """The session's evolution ends between two steps (or two chunks of the fit): the worker
    thread is gone within a second of close(), and the runs are dropped."""
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, seed=3, **{**SMALL, "T": 50.0})
    assert e.run()
    _wait(lambda: (e.worker.lanes["main"].state == "running"
                   and e.worker.lanes["main"].latest is not None
                   and e.worker.lanes["main"].latest.num_accepted >= 2), every=e.render)
    evo = e.worker.lanes["main"].evolution
    t0 = time.perf_counter()
    e.close(wait=False)
    e.worker._thread.join(5)
    stopped_in = time.perf_counter() - t0
    assert not e.worker.alive
    assert stopped_in < 1.0, stopped_in
    assert e.worker.lanes == {} and e.worker.starts == {} and e.pins == []
    assert evo._stop_requested


def test_closing_while_preparing_stops_in_the_fit():
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, seed=4, **{**SMALL, "fit_steps": 20000})
    assert e.run()
    lane = e.worker.lanes["main"]
    _wait(lambda: lane.stage.startswith("fit (Adam)") and lane.stage_fraction > 0)  # compiled, fitting
    t0 = time.perf_counter()
    e.close()
    assert not e.worker.alive and time.perf_counter() - t0 < 1.5


# ------------------------------------------------------------------------------- Dask
def test_dask_local_cluster_streams_an_evolution_to_a_session():
    distributed = pytest.importorskip("distributed")
    from app.main import MNEExplorer
    from app.pool import DaskPool

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        pool = DaskPool(cluster, chunk=3)
        assert pool.slots == 1
        e = MNEExplorer(live=False, pool=pool, seed=5, **SMALL)
        try:
            assert e.run()
            lane = e.worker.lanes["main"]
            _wait(lambda: lane.state in ("done", "warning", "failed"), every=e.render)
            assert lane.state in ("done", "warning"), lane.message
            assert getattr(lane.evolution, "remote", False)
            snaps = lane.history
            assert len(snaps) > 3 and snaps[0].t == 0 and abs(snaps[-1].t - SMALL["T"]) < 1e-6
            assert all(b.t > a.t for a, b in zip(snaps, snaps[1:]))
            assert snaps[-1].points.shape == (SMALL["n_points"], 2)
            assert lane.field_ is not None and lane.field_.model is not None  # computed on the cluster
            # the plots received the streamed particles
            assert e.live.field.points_pipe.data is not None and len(e.live.field.points_pipe.data) == 64
            assert pool.running == 0
        finally:
            e.close()
            pool.close()


def test_dask_run_stops_when_asked():
    distributed = pytest.importorskip("distributed")
    import mne_core
    from app.pool import DaskPool
    from app.settings import Settings

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        pool = DaskPool(cluster, chunk=2)
        cfg = Settings(**{**SMALL, "T": 50.0}).to_config()
        from app.main import EvolutionFactory

        evo = pool.evolution(EvolutionFactory(cfg))
        evo.prepare()
        seen = []
        for snap in evo.steps():
            seen.append(snap)
            if len(seen) == 3:
                evo.request_stop()
            assert len(seen) < 20
        assert evo.status == mne_core.Status.INTERRUPTED
        pool.close()
