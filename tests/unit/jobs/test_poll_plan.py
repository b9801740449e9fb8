"""The poll plan (jobs.schedule): learned from durations, dense near the expected finish, never more polls
than the fixed backoff, jittered per job, sparse behind a webhook."""

from __future__ import annotations

import random
from bisect import bisect_left
from itertools import pairwise

import pytest

from mediamux.jobs.schedule import (
    FIRST_POLL_S,
    JITTER,
    MAX_POLL_S,
    STAND_IN,
    Expectation,
    Plan,
    baseline_age,
    baseline_polls,
    dense_step,
    finish_estimate,
)

TEN_S = [10.0, 10.1, 10.2, 10.3, 10.4] * 6  # thirty recent 10-second jobs


def polls_until(plan: Plan, finish_s: float) -> tuple[int, float]:
    """How many polls the plan makes for a job that finishes at ``finish_s``, and the age of the one
    that sees it finished."""
    n = 0
    while plan.age(n) < finish_s:
        n += 1
    return n + 1, plan.age(n)


def test_the_fixed_backoff_is_one_second_then_half_as_long_again_up_to_eight() -> None:
    assert [round(baseline_age(n), 3) for n in range(7)] == [1.0, 2.5, 4.75, 8.125, 13.188, 20.781, 28.781]
    assert baseline_polls(10.0) == 5  # the MuAPI 10 s job: seen at 13.2 s, 3.2 s late


def test_with_no_history_the_plan_is_the_fixed_backoff_give_or_take_its_jitter() -> None:
    plan = Plan(None, seed="job_a")

    for n in range(12):
        gap = baseline_age(n) - (baseline_age(n - 1) if n else 0.0)
        assert abs(plan.age(n) - baseline_age(n)) <= JITTER * gap + 1e-9
    assert Plan(None, seed="job_a", jitter=0).head(5) == [baseline_age(n) for n in range(5)]


def test_a_learned_plan_sees_a_ten_second_job_finish_within_one_dense_step_and_with_fewer_polls() -> None:
    expectation = Expectation.learn(TEN_S)
    assert expectation is not None
    step = dense_step(expectation)

    for seed in range(50):
        plan = Plan(expectation, seed=seed)
        for finish in (10.0, 10.1, 10.25, 10.4):
            polls, seen = polls_until(plan, finish)
            assert seen - finish <= step * (1 + 2 * JITTER)
            assert polls <= baseline_polls(finish)
    assert step < 1.0


@pytest.mark.parametrize(
    "durations",
    [[10.2], [10.2, 13.0], TEN_S, [60.0] * 10, [300.0] * 30, [3.0] * 10, [0.4] * 10, [5.0, 50.0, 500.0]],
    ids=["one", "two", "thirty-10s", "1min", "5min", "3s", "sub-second", "scattered"],
)
@pytest.mark.parametrize("webhook", [False, True], ids=["polled", "webhook"])
def test_no_plan_ever_polls_more_often_than_the_fixed_backoff(durations: list[float], webhook: bool) -> None:
    plan = Plan(Expectation.learn(durations), seed="s", webhook=webhook, jitter=0)

    ours = budget = 0  # polls made before ``finish``, by the plan and by the fixed backoff
    for finish in [x / 4 for x in range(1, 4 * 700)]:
        while plan.age(ours) < finish:
            ours += 1
        while baseline_age(budget) < finish:
            budget += 1
        assert ours <= budget, finish


def test_polls_are_sparse_before_the_expected_finish_dense_near_it_and_back_off_after() -> None:
    plan = Plan(Expectation.learn([60.0] * 10), seed="s", jitter=0)
    ages = plan.head(14)
    gaps = [b - a for a, b in pairwise(ages)]

    before = [g for a, g in zip(ages, gaps, strict=False) if a < 50]
    near = [g for a, g in zip(ages, gaps, strict=False) if 55 <= a <= 63]
    after = [g for a, g in zip(ages, gaps, strict=False) if a > 66]
    assert ages[0] == FIRST_POLL_S  # a job that fails at once is still noticed at once
    assert sum(before) / len(before) > 2 * sum(near) / len(near) and max(near) <= 3.0
    assert after == sorted(after) and after[-1] == MAX_POLL_S


def test_a_plan_is_the_same_each_time_for_one_job_and_differs_between_jobs() -> None:
    expectation = Expectation.learn(TEN_S)

    assert Plan(expectation, seed="job_a").head(8) == Plan(expectation, seed="job_a").head(8)
    firsts = {round(Plan(expectation, seed=f"job_{i}").age(0), 4) for i in range(200)}
    assert len(firsts) > 150  # 200 jobs submitted together do not poll in lockstep


def test_behind_a_webhook_the_plan_waits_past_the_slow_end_before_its_first_poll() -> None:
    expectation = Expectation.learn(TEN_S)
    assert expectation is not None

    plan = Plan(expectation, seed="s", webhook=True)

    assert plan.age(0) > expectation.late_s + 0.5
    assert polls_until(plan, 10.2)[0] == 1
    assert Plan(None, seed="s", webhook=True, jitter=0).head(3) == [2.0, 6.0, 14.0]


def test_polls_made_off_the_plan_use_up_planned_ones_instead_of_adding_to_them() -> None:
    plan = Plan(Expectation.learn(TEN_S), seed="s", jitter=0)
    planned = plan.head(6)

    # One poll off the plan at 5 s (a read, or the last look before an answer) takes the first slot.
    assert plan.due(1, 5.0) == planned[1]
    # And one at 10.1 s, after the first planned poll, takes the slot it came just before.
    assert plan.due(2, 10.1) == next(t for t in planned[2:] if t >= 10.1 + STAND_IN * (t - planned[1]))
    assert plan.due(2, planned[1] - 0.01) == planned[2]  # one a moment before a slot takes that slot


def test_a_job_resumed_long_after_its_plan_catches_up_with_one_poll_then_keeps_the_even_tail() -> None:
    plan = Plan(Expectation.learn(TEN_S), seed="s", jitter=0)

    first = plan.due(3, 9.0)  # three polls by 9 s; nothing since, and it is now 600 s
    assert first <= 600  # due already: one poll now
    after = plan.due(4, 600.0)
    assert 600 + MAX_POLL_S / 2 <= after <= 600 + MAX_POLL_S
    assert plan.due(50_000, 3600.0) > 3600.0  # far into the tail, found without walking it


def test_learning_is_robust_to_an_outlier_and_wide_when_samples_are_few() -> None:
    many = Expectation.learn([*TEN_S[:29], 600.0])
    one = Expectation.learn([10.0])
    assert many is not None and one is not None

    assert many.typical_s == pytest.approx(10.2) and many.late_s < 11.0
    assert one.early_s == pytest.approx(7.5) and one.late_s == pytest.approx(12.5)
    assert Expectation.learn([]) is None
    assert Expectation.learn([float("nan"), -1.0]) is None


# -- the budget, kept as polls fall due -------------------------------------------------------------

HISTORIES = [
    None,
    [10.2],
    [10.2, 13.0],
    TEN_S,
    [9.7] * 20 + [10.1] * 10,
    [10.74, 10.49, 10.1, 10.04, 10.1, 10.2, 10.2, 9.78, 9.67, 10.08],
    [60.0] * 10,
    [300.0] * 30,
    [3.0] * 10,
    [0.4] * 10,
    [5.0, 50.0, 500.0],
]


FINISHES = [x / 8 for x in range(1, 8 * 700)]
BASELINE = [baseline_age(n) for n in range(100)]


def test_no_job_is_polled_more_often_than_the_fixed_backoff_whatever_its_duration_and_however_it_is_polled() -> (
    None
):
    """The promise, as the engine keeps it: each poll falls due on the job's current plan, which may be
    rebuilt from new history between any two polls, and polls are answered late. However that goes, a
    job that finishes at any age has had no more polls by then than the fixed backoff would have made
    (a read that asks the provider is the caller's own look, on top)."""
    rng = random.Random(13)
    expectations = [Expectation.learn(h) if h else None for h in HISTORIES]
    for case in range(400):
        webhook = rng.random() < 0.2
        plan = Plan(rng.choice(expectations), seed=case, webhook=webhook, jitter=0)
        polls: list[float] = []  # the age of every poll of this job
        checked = 0.0
        while not polls or polls[-1] < 700:
            if rng.random() < 0.3:  # what jobs of its kind took has moved: a new plan mid-wait
                plan = Plan(rng.choice(expectations), seed=case, webhook=webhook, jitter=0)
            polls.append(plan.due(len(polls), checked))
            checked = polls[-1] + rng.choice([0.0, 0.0, rng.uniform(0.0, 0.6)])  # answered late under load
        # For every duration: the poll that sees the job finished is the first at or after it.
        for finish in FINISHES:
            assert bisect_left(polls, finish) <= bisect_left(BASELINE, finish), (case, finish, polls)


def test_a_job_whose_plan_is_rebuilt_mid_wait_keeps_its_polls_around_the_expected_finish() -> None:
    """200 jobs at once: as the first of them finish, what their kind takes moves (here: a little earlier
    and tighter), and a job already past its first dense polls gets a new plan, which wants a sparse
    early poll it will never make. Its next poll still comes a dense step or so after its last look,
    not at the fixed backoff's next age (13.2 s for a 10 s job)."""
    loose = Expectation.learn([10.74, 10.49, 10.1, 10.04, 10.1, 10.2, 10.2, 9.78, 9.67, 10.08])
    tight = Expectation.learn([9.6] * 25 + [9.7] * 5)
    assert loose is not None and tight is not None
    for seed in range(100):
        first = Plan(loose, seed=seed)
        checked = first.age(1) + 0.05  # two dense polls, the second answered a moment late
        rebuilt = Plan(tight, seed=seed)
        assert rebuilt.age(0) < 2.0  # the new plan starts with a sparse early poll
        nxt = rebuilt.due(2, checked)
        assert nxt - checked < 3 * dense_step(tight), (seed, first.head(4), rebuilt.head(5), checked, nxt)


def test_a_planned_poll_answered_late_does_not_take_the_place_of_the_next_one() -> None:
    expectation = Expectation.learn(TEN_S)
    assert expectation is not None
    plan = Plan(expectation, seed="s", jitter=0)
    planned = plan.head(4)
    step = planned[2] - planned[1]

    # The second poll was due at planned[1]; its answer came 60 % of a dense step later.
    assert plan.due(2, planned[1] + 0.6 * step) == planned[2]


def test_when_the_budget_cannot_pay_for_the_whole_dense_window_its_earliest_polls_go_first() -> None:
    """One 10 s sample is a wide guess (7.5 s to 12.5 s): more dense polls than the fixed backoff pays
    for before 13.2 s. The earliest go (a job that finishes before them is seen a step later), not the
    latest (a job that finishes after them would not be seen until 13.2 s)."""
    expectation = Expectation.learn([10.0])
    assert expectation is not None
    plan = Plan(expectation, seed="s", jitter=0)
    ages = plan.head(5)

    before_budget = [a for a in ages if a < baseline_age(4)]
    assert len(before_budget) == 4
    assert before_budget[-1] >= expectation.late_s  # the slow end is still covered
    assert ages[0] > expectation.early_s  # the fast end's first polls gave way
    for finish in (x / 10 for x in range(80, 126)):
        seen = next(a for a in [*ages, plan.age(5)] if a >= finish)
        assert seen - finish <= 2 * dense_step(expectation), finish


# -- what a finished job teaches -------------------------------------------------------------------


def test_looks_close_together_teach_the_midpoint_between_them() -> None:
    expectation = Expectation.learn(TEN_S)
    assert expectation is not None

    assert finish_estimate(9.9, 10.3, expectation) == pytest.approx(10.1)
    assert finish_estimate(8.125, 13.1875, None) == pytest.approx(10.65625)  # no history: the fixed backoff's


def test_a_job_seen_finished_at_its_first_look_is_not_learned_as_taking_half_its_age() -> None:
    """Under load a job can be accepted late and found finished by its first poll: that it finished some
    time after acceptance says little, and the midpoint (4.8 s for a 10 s job seen at 9.6 s) would pull
    every later plan away from where jobs of its kind finish."""
    expectation = Expectation.learn(TEN_S)
    assert expectation is not None

    learned = finish_estimate(0.0, 9.6, expectation)
    assert learned == pytest.approx(9.6)  # faster than every recent job: no faster than it was seen
    within = finish_estimate(0.0, 10.6, expectation)
    assert expectation.early_s <= within <= expectation.late_s
    slower = finish_estimate(11.0, 19.0, expectation)  # slower than all of them: the midpoint
    assert slower == pytest.approx(15.0)
