"""The poll plan (jobs.schedule): learned from durations, dense near the expected finish, never more polls
than the fixed backoff, jittered per job, sparse behind a webhook."""

from __future__ import annotations

from itertools import pairwise

import pytest

from mediamux.jobs.schedule import (
    FIRST_POLL_S,
    JITTER,
    MAX_POLL_S,
    Expectation,
    Plan,
    baseline_age,
    baseline_polls,
    dense_step,
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
    # And one at 10.1 s, after the first planned poll, takes the slot it came before.
    assert plan.due(2, 10.1) == next(t for t in planned[2:] if t >= 10.1 + (t - planned[1]) / 2)


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
