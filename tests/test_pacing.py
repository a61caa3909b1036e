"""Pacing of the explorer's plot updates (app.pacing.FrameBudget) on a simulated clock."""
import pytest

from app.pacing import FrameBudget

P = 0.066


def drive(budget, ticks, cost, lag=0.0):
    """Run ``ticks`` periodic callbacks; a rendering callback takes ``cost`` s, and every tick
    comes ``lag`` s later than the period after the previous one ended.  Returns the render times."""
    now, rendered = 0.0, []
    end = None
    for _ in range(ticks):
        now = (end + P + lag) if end is not None else 0.0
        due = budget.tick(now)
        end = now + (cost if due else 0.001)
        budget.done(now, end, rendered=due)
        if due:
            rendered.append(now)
    return rendered


def test_a_cheap_page_on_a_free_loop_updates_at_every_tick():
    b = FrameBudget(P)
    times = drive(b, 30, cost=0.005)
    assert len(times) == 30
    assert b.interval == pytest.approx(P)


def test_a_slow_page_takes_at_most_its_share_of_the_loop():
    b = FrameBudget(P, share=0.5)
    times = drive(b, 200, cost=0.1)
    busy = 0.1 * len(times) / (times[-1] - times[0] + 0.1)
    assert busy <= 0.5 + 1e-9
    assert busy > 0.3  # and it still updates about as often as its share allows
    gaps = [b_ - a for a, b_ in zip(times, times[1:])]
    assert min(gaps) >= 0.2 - 1e-9


def test_a_congested_loop_backs_off_to_the_longest_interval_and_recovers():
    b = FrameBudget(P, max_interval_s=1.0)
    drive(b, 20, cost=0.005, lag=0.3)           # other sessions hold the loop
    assert b.interval == pytest.approx(1.0)
    late = drive(b, 20, cost=0.005, lag=0.3)
    assert len(late) <= 20 * (P + 0.3 + 0.005) / 1.0 + 1
    assert b.congested
    drive(b, 5, cost=0.005, lag=0.0)            # ticks on time again: back within ≈ 2 s
    assert b.interval > P
    drive(b, 40, cost=0.005, lag=0.0)
    assert b.interval == pytest.approx(P) and not b.congested


def test_the_cost_rule_is_not_capped_by_the_congestion_limit():
    b = FrameBudget(P, share=0.5, max_interval_s=1.0)
    times = drive(b, 100, cost=1.5)
    assert min(t2 - t1 for t1, t2 in zip(times, times[1:])) >= 3.0 - 1e-9


def test_reset_makes_the_next_tick_render():
    b = FrameBudget(P)
    b.tick(0.0)
    b.done(0.0, 0.4, rendered=True)             # next due at 0.8
    assert not b.tick(0.47)
    b.done(0.47, 0.471, rendered=False)
    b.backoff = 1.0                             # congested …
    b.reset()                                   # … but the user clicked: a full update now
    assert not b.congested
    assert b.tick(0.54)


def test_share_is_checked():
    with pytest.raises(ValueError):
        FrameBudget(P, share=0.0)
