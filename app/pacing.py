"""Pacing of a page's plot updates, so that one busy page cannot starve the server's event loop.

Every Bokeh session of a server shares one event loop (one Python thread).  A live explorer
page pushes new data into about eight HoloViews plots up to 15 times a second; with the run
computing on the same cores, that alone kept the loop ≈ 75 % busy (py-spy), and thirty class
pages opened at that moment waited 11 s for their first frame (``benchmarks/app_load.py
--lecturer``).  A page now spaces its plot updates by two rules:

* **its own cost** — after an update that took c seconds the next waits at least c / SHARE,
  so a page's plots use at most SHARE of the loop however slow they are;
* **the loop's congestion** — each tick measures how late it came (its lag: the time since
  the previous callback ended, minus the period).  A late tick means other sessions wait for the loop;
  the page then doubles its update interval (up to MAX_INTERVAL_S), and shrinks it by RECOVER
  per tick that comes on time (≈ 2 s back to the period); while the loop is congested
  (``congested``) the page updates only its particle cloud, the cheapest of its plots.

The interval is the largest of the period, the congestion's and the cost's (the last is not
capped: a page whose update takes 1.5 s updates every 3 s).

Only the plots and the lines above them are paced: the page's cheap duties (noticing a closed
tab, applying a pending restart, sharing frames with ``/watch``) run on every tick.  Nothing is
lost by a skipped update — the next one shows the newest state — and a light update is full
whenever it would otherwise leave the page wrong (a new run or projection, a run that ended) and
at least every ``app.live.FULL_EVERY_S`` (which also brings the contours up to date).
"""
from __future__ import annotations

__all__ = ["FrameBudget", "SHARE", "LATE_S", "MAX_INTERVAL_S", "RECOVER"]

#: Largest fraction of the event loop one page's plot updates may take.
SHARE = 0.5
#: A tick this much later than its period means the loop is congested.
LATE_S = 0.05
#: Factor of the congestion interval per on-time tick.
RECOVER = 0.9
#: The longest interval a congested loop imposes between two plot updates of a page (s).
MAX_INTERVAL_S = 2.0


class FrameBudget:
    """When a page may update its plots next (times in seconds, any monotonic clock).

    Per periodic callback: ``due = tick(start)``, the work, then ``done(start, end, rendered=due)``.
    The lag of a tick is measured from the end of the previous callback, so the page's own cost
    is not counted as congestion (a slow callback's next tick may come at once or on the next
    period, depending on the server's scheduler; either way its lag is small)."""

    def __init__(self, period_s: float, share: float = SHARE, late_s: float = LATE_S,
                 max_interval_s: float = MAX_INTERVAL_S):
        if not (0 < share <= 1):
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.period, self.share, self.late = float(period_s), float(share), float(late_s)
        self.max_interval = float(max_interval_s)
        self.backoff = self.period      # interval demanded by the loop's congestion
        self.cost_interval = 0.0        # interval demanded by the page's own cost
        self.next_due = -float("inf")
        self._last_end = None

    @property
    def interval(self) -> float:
        """The current spacing of plot updates."""
        return max(self.period, self.backoff, self.cost_interval)

    @property
    def congested(self) -> bool:
        """Ticks came late recently: other sessions wait for the loop."""
        return self.backoff > 2.0 * self.period

    def tick(self, now: float) -> bool:
        """A periodic callback starts at ``now``; True when a plot update is due."""
        if self._last_end is not None:
            lag = now - self._last_end - self.period
            if lag > self.late:
                self.backoff = min(self.max_interval, 2.0 * max(self.backoff, self.period))
            else:
                self.backoff = max(self.period, RECOVER * self.backoff)
        return now >= self.next_due

    def done(self, start: float, end: float, rendered: bool) -> None:
        """The callback that began at ``start`` ended at ``end``; when it updated the plots, the
        next update waits ``interval`` (its cost / SHARE at least)."""
        self._last_end = end
        if rendered:
            self.cost_interval = max(0.0, end - start) / self.share
            self.next_due = start + self.interval

    def reset(self) -> None:
        """Update at the next tick, in full (a new run, a click: the user waits for it)."""
        self.next_due = -float("inf")
        self.backoff = self.period
