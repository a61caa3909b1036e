"""The class's page (/watch): it plays the server's recording, follows a run that a lecturer's page
shares (?broadcast=1), and falls back when that page closes.  Model level, no browser (the
served route is checked in tests/test_browser.py)."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("app_model")
STATUS = re.compile(r"t = (\d+\.\d\d) · steps (\d+)")


def _t(page) -> float:
    return float(STATUS.search(page.status.text).group(1))


def test_the_watch_page_loops_the_default_recording():
    from app.watch import HOLD_S, Channel, WatchPage, default_recording

    rec = default_recording()
    assert rec is not None, "the shipped recording of the default preset is missing"
    page = WatchPage(channel=Channel())
    assert "recorded run" in page.note.text and _t(page) == 0.0
    x0 = np.array(page.source.data["x"])
    assert len(x0) == len(rec.snapshots[0].points) == 512
    np.testing.assert_allclose(x0, np.asarray(rec.snapshots[0].points)[:, rec.proj[0]], atol=1e-6)
    assert page.figure.x_range.start == pytest.approx(rec.fields[0].extent[0])

    page._t0 -= 2.0  # two seconds into the loop: a later frame, points moved
    assert page.tick() and _t(page) > 0
    assert np.abs(np.array(page.source.data["x"]) - x0).max() > 0.05
    assert not page.tick(), "an unchanged frame is not sent again"

    n = len(rec.snapshots)
    page._t0 -= 100.0 * n  # far along: wherever it is, it is inside the loop, never past the end
    page.tick()
    assert 0.0 <= _t(page) <= rec.T + 1e-9
    play = min(0.1, 8.0 / n) * n
    page._t0 = time.monotonic() - (play + 0.5 * HOLD_S)  # holding the last frame, with the verdict
    page.tick()
    assert _t(page) == pytest.approx(rec.T, abs=0.01) and "✓ done" in page.title.text


def test_a_shared_run_reaches_the_class_and_the_class_falls_back_when_it_closes():
    from app.main import MNEExplorer
    from app.watch import CHANNEL, WatchPage

    other = MNEExplorer(live=False, autorun=False)          # a student's own page: shares nothing
    lecturer = MNEExplorer(live=False, autorun=False, broadcast=True)
    page = WatchPage(channel=CHANNEL)
    try:
        assert other.run(recorded=True) and lecturer.run(recorded=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            other.render()
            lecturer.render()
            lane = lecturer.worker.lanes["main"]
            if lane.latest is not None and lane.latest.t > 0:
                break
            time.sleep(0.05)
        assert CHANNEL.sharing
        assert page.tick() and "shared by the lecturer" in page.note.text
        snap = lecturer.worker.lanes["main"].latest
        np.testing.assert_allclose(page.source.data["y"], np.asarray(snap.points)[:, 1], atol=1e-6)
        assert _t(page) == pytest.approx(float(snap.t), abs=0.006)

        lecturer.settings.broadcast = False  # the lecturer stops sharing: back to the recording
        lecturer.render()
        assert not CHANNEL.sharing and page.tick() and "recorded run" in page.note.text

        lecturer.settings.broadcast = True
        lecturer.render()
        assert page.tick() and "shared by the lecturer" in page.note.text
        lecturer.close()                     # the lecturer's tab closes
        assert not CHANNEL.sharing and page.tick() and "recorded run" in page.note.text
        other.render()
        assert not CHANNEL.sharing, "a page that does not share never publishes"
    finally:
        lecturer.close()
        other.close()



def test_the_broadcast_setting_is_in_the_url():
    from app.settings import Settings

    assert "broadcast" in Settings.URL_PARAMS and Settings.param.broadcast.default is False
