"""When to ask a provider about a job: a poll plan learned from how long jobs of its kind took.

A job's *age* is counted from when the provider accepted it (uploads and other work before the
submission are not the provider's time). A plan says at which ages it wants to poll, and when the
next poll is due given how many polls the job has had and when it was last looked at:

* The *budget*: the n-th poll of a job is never due before the n-th poll of the fixed backoff every
  job used before (first poll after ``FIRST_POLL_S``, each gap ``BACKOFF`` times the last, at most
  ``MAX_POLL_S`` apart). So, whatever its duration, no job is polled more often than that backoff
  would poll it. The budget is applied when a poll falls due, to the polls the job has actually had:
  a plan rebuilt mid-wait (what jobs of the kind took has moved) or polls answered late under load
  leave the job its remaining polls near the expected finish, instead of pushing them out to the
  backoff's next age (13.2 s for a 10 s job).
* With no history for the kind of job (provider, operation and model), the plan is that fixed backoff.
* With history (an :class:`Expectation`: the median and the fast and slow ends of the recent
  durations), polls are sparse before the fast end, dense from just before it to just after the slow
  end, and back off after it; when the budget cannot pay for the sparse early polls, they go first.
* When a webhook will announce the finish, polls are only the fallback for a webhook that never
  comes: none before the slow end, then a backoff.

Every age is jittered by a fraction of the gaps around it (seeded by the job, so the plan is the same
each time it is made): jobs submitted together do not poll the provider in lockstep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

FIRST_POLL_S = 1.0
MAX_POLL_S = 8.0
BACKOFF = 1.5
# Each age moves by up to this share of the smaller gap around it (the fixed backoff's ±15 %).
JITTER = 0.15
# A look at the job (a read, a webhook, the last look before an answer, a poll answered late) stands
# for a planned poll that comes less than this share of its gap after it: a planned poll answered late
# under load must not also take the place of the next one.
STAND_IN = 0.25

# How many recent completions of a kind its expectation is learned from.
HISTORY = 30
# Dense polling: its spacing is this share of the typical duration plus this share of the spread
# between fast and slow jobs, never closer than DENSE_MIN_S nor wider than MAX_POLL_S.
DENSE_SHARE = 0.04
SPREAD_SHARE = 0.15
DENSE_MIN_S = 0.25
# Sparse polls before the dense window: 1, 3, 9, 27 s ..., each gap at most the larger of
# MAX_POLL_S and this share of the typical duration, and none later than EARLY_SHARE of the way to
# the window (the budget may drop them: the dense window is worth more).
EARLY_GROWTH = 3.0
EARLY_GAP_SHARE = 0.2
EARLY_SHARE = 0.6
# How few samples make an estimate wide: the fast and slow ends move out by this share of the median,
# divided by the number of samples (one sample: ±25 %).
SMALL_SAMPLE_WIDEN = 0.25
# With a webhook: the first fallback poll comes this long after the slow end (at least one dense
# step), and with no history, at 2 s and then twice as far apart each time.
WEBHOOK_GRACE_S = 1.0
WEBHOOK_PRIOR_FIRST_S = 2.0
WEBHOOK_PRIOR_GROWTH = 2.0


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Expectation:
    """How long jobs of one kind take from acceptance to a seen finish, learned from recent ones."""

    typical_s: float  # the median
    early_s: float  # the fast end (10th percentile, widened when samples are few)
    late_s: float  # the slow end (90th percentile, widened likewise)
    samples: int

    @classmethod
    def learn(cls, durations: Iterable[float]) -> Expectation | None:
        """From durations in seconds (negative or non-finite ones are ignored); None without any."""
        ordered = sorted(d for d in durations if math.isfinite(d) and d >= 0)
        if not ordered:
            return None
        n = len(ordered)
        typical = _quantile(ordered, 0.5)
        widen = typical * SMALL_SAMPLE_WIDEN / n
        return cls(
            typical_s=typical,
            early_s=max(0.0, _quantile(ordered, 0.1) - widen),
            late_s=_quantile(ordered, 0.9) + widen,
            samples=n,
        )


def dense_step(e: Expectation) -> float:
    """How far apart a plan polls around the expected finish."""
    spread = e.late_s - e.early_s
    return min(MAX_POLL_S, max(DENSE_MIN_S, DENSE_SHARE * e.typical_s + SPREAD_SHARE * spread))


@lru_cache(maxsize=1)
def _baseline_head() -> tuple[tuple[float, ...], float]:
    """The fixed backoff's ages until its gaps reach MAX_POLL_S, and that last gap."""
    ages, t, gap = [], 0.0, FIRST_POLL_S
    while True:
        t += gap
        ages.append(t)
        if gap >= MAX_POLL_S:
            return tuple(ages), gap
        gap = min(MAX_POLL_S, gap * BACKOFF)


def baseline_age(n: int) -> float:
    """The age of the n-th poll (from 0) of the fixed backoff: the budget every plan keeps to."""
    head, gap = _baseline_head()
    if n < len(head):
        return head[n]
    return head[-1] + (n - len(head) + 1) * gap


def baseline_polls(duration_s: float) -> int:
    """How many polls the fixed backoff makes for a job that finishes at ``duration_s``."""
    n = 0
    while baseline_age(n) < duration_s:
        n += 1
    return n + 1


def finish_estimate(before_s: float, seen_s: float, expectation: Expectation | None) -> float:
    """How long a job took, from the last look that found it running (at age ``before_s``; 0 for none
    since its acceptance) and the one that found it finished (``seen_s``): it finished in between.

    Looks close together (as a plan polls near the expected finish): the midpoint. Looks far apart say
    little, and their midpoint can be far off: a 10 s job first polled at 9.6 s would be learned as a
    4.8 s job, one read 30 s after it was accepted as a 15 s one, and enough of those spread every
    later plan's dense polls away from where jobs of the kind finish. Then the estimate is what recent
    jobs took, moved into the interval if it lies outside: such a look teaches only what it rules out.
    A job slower than all of them keeps the midpoint (the plan was backing off there, as the fixed
    backoff does, whose midpoints are what is learned from with no history).
    """
    seen_s = max(seen_s, before_s)
    mid = (before_s + seen_s) / 2
    if (
        expectation is None
        or seen_s - before_s <= 2 * dense_step(expectation)
        or before_s >= expectation.late_s
    ):
        return mid
    return min(max(expectation.typical_s, before_s), seen_s)


class Plan:
    """When one job is polled; see the module docstring."""

    def __init__(
        self,
        expectation: Expectation | None,
        *,
        seed: str | int = 0,
        webhook: bool = False,
        jitter: float = JITTER,
    ) -> None:
        self.expectation = expectation
        self.webhook = webhook
        self._seed = seed
        self._jitter = jitter
        self._floors: dict[int, float] = {}
        self._unpaid: dict[int, int] = {}
        # The fixed backoff's ages are its own budget: its n-th poll takes its n-th age or a later one.
        self._fixed = not webhook and expectation is None
        nominal: list[float] = []
        self._core = 0  # how many of the wanted ages (the sparse and dense ones) the budget must pay for
        self._tail_gap = MAX_POLL_S
        if webhook:
            nominal, self._tail_gap = self._fallback(expectation)
        elif expectation is not None:
            nominal, self._core, self._tail_gap = self._learned(expectation)
        self._nominal = nominal
        rng = random.Random(f"{seed}")
        self._wanted: list[float] = []
        for i, t in enumerate(nominal):
            before = t - (nominal[i - 1] if i else 0.0)
            after = (nominal[i + 1] - t) if i + 1 < len(nominal) else self._tail_gap
            self._wanted.append(t + (2 * rng.random() - 1) * jitter * min(before, after))
        self._ages: list[float] = []

    # -- building ---------------------------------------------------------------------------------

    @staticmethod
    def _learned(e: Expectation) -> tuple[list[float], int, float]:
        """Sparse polls, dense ones around the expected finish, a backoff after; how many are sparse or
        dense; the tail's gap."""
        step = dense_step(e)
        start = max(DENSE_MIN_S, e.early_s - step / 2)
        end = e.late_s + step / 2
        count = max(2, math.ceil((end - start) / step - 1e-9) + 1)
        grid = [start + i * step for i in range(count)]
        # The budget pays for a run of the grid (its n-th poll no earlier than the fixed backoff's
        # n-th): the longest, and of those the one centred nearest the typical duration. A wide guess
        # (few samples) loses polls at both ends, where a job is least likely to finish.
        best: tuple[int, float, int] = (0, 0.0, 0)
        for a in range(count):
            n = 0
            while a + n < count and grid[a + n] >= baseline_age(n):
                n += 1
            if n:
                off_centre = abs((grid[a] + grid[a + n - 1]) / 2 - e.typical_s)
                if (n, -off_centre) > (best[0], -best[1]) or not best[0]:
                    best = (n, off_centre, a)
        n, _, a = best
        dense = grid[a : a + n] if n else grid  # none paid for: the budget's own ages it is
        early: list[float] = []
        t, cap = FIRST_POLL_S, max(MAX_POLL_S, EARLY_GAP_SHARE * e.typical_s)
        while t < EARLY_SHARE * start:
            early.append(t)
            t += min(cap, t * (EARLY_GROWTH - 1))
        # As many early polls as leave every dense poll where it is under the budget.
        keep = len(early)
        while keep and any(d < baseline_age(keep + j) for j, d in enumerate(dense)):
            keep -= 1
        after: list[float] = []
        t, gap, cap = dense[-1], step, max(MAX_POLL_S, step)
        while gap < cap:
            gap = min(cap, gap * BACKOFF)
            t += gap
            after.append(t)
        return early[:keep] + dense + after, (keep + len(dense)) if n else 0, cap

    @staticmethod
    def _fallback(e: Expectation | None) -> tuple[list[float], float]:
        """Polls behind a webhook: for when it never comes."""
        ages: list[float] = []
        if e is None:
            t, gap = WEBHOOK_PRIOR_FIRST_S, WEBHOOK_PRIOR_FIRST_S
            while gap < MAX_POLL_S:
                ages.append(t)
                gap = min(MAX_POLL_S, gap * WEBHOOK_PRIOR_GROWTH)
                t += gap
            ages.append(t)
            return ages, MAX_POLL_S
        step = dense_step(e)
        t, gap, cap = e.late_s + max(WEBHOOK_GRACE_S, step), max(WEBHOOK_GRACE_S, step), max(MAX_POLL_S, step)
        ages.append(t)
        while gap < cap:
            gap = min(cap, gap * BACKOFF)
            t += gap
            ages.append(t)
        return ages, cap

    # -- reading ----------------------------------------------------------------------------------

    def floor(self, n: int) -> float:
        """The budget: the earliest age of a job's n-th poll (from 0), the fixed backoff's n-th age
        jittered as that backoff always was."""
        found = self._floors.get(n)
        if found is None:
            t = baseline_age(n)
            gap = min(t - (baseline_age(n - 1) if n else 0.0), baseline_age(n + 1) - t)
            u = random.Random(f"{self._seed}:floor:{n}").random()
            found = t + (2 * u - 1) * self._jitter * gap
            if n < 64:
                self._floors[n] = found
        return found

    def _next_fixed(self, polls: int, checked_age: float) -> float:
        i = max(0, polls)
        head, gap = _baseline_head()
        if checked_age > head[-1] + gap:  # far into its even part: start near the last look
            i = max(i, len(head) - 2 + math.floor((checked_age - head[-1]) / gap))
        while True:
            t = self.floor(i)
            if t >= checked_age + STAND_IN * (t - (self.floor(i - 1) if i else 0.0)):
                return t
            i += 1

    def _last_unpaid(self, shift: int) -> int:
        """The last sparse or dense age the budget cannot pay for when the job's poll count runs
        ``shift`` ahead of the plan's index (-1 for none): taking the j-th wanted age as poll number
        ``j + shift`` leaves every later one paid for only if j is past it."""
        found = self._unpaid.get(shift)
        if found is None:
            ahead = range(max(0, -shift), self._core)  # (earlier ones are never taken at this shift)
            found = max((k for k in ahead if self._nominal[k] < baseline_age(k + shift)), default=-1)
            self._unpaid[shift] = found
        return found

    def _next_wanted(self, polls: int, checked_age: float) -> float:
        """Where the plan next wants a poll: the first wanted age far enough after the last look (a
        look stands for a planned poll just after it: a read, a webhook, the last look before an
        answer, or a planned poll answered late) from which the budget still pays for every sparse and
        dense poll left, the earliest of them dropped first when it cannot. Past its last wanted age,
        a plan wants a poll every tail gap after the last look."""
        prev = 0.0
        for j, t in enumerate(self._wanted):
            if t >= checked_age + STAND_IN * (t - prev) and j > self._last_unpaid(polls - j):
                return t
            prev = t
        u = random.Random(f"{self._seed}:tail:{polls}").random()
        return max(checked_age, prev) + self._tail_gap * (1 + (2 * u - 1) * self._jitter)

    def due(self, polls: int, checked_age: float) -> float:
        """The age at which the next poll is due, after ``polls`` polls with the last look at the job
        (a poll, or the submission's answer) at ``checked_age``: where the plan next wants one, never
        before the budget allows the job's next poll. A job resumed long after its plan was due
        catches up with one poll, not a burst."""
        polls = max(0, polls)
        wanted = (
            self._next_fixed(polls, checked_age) if self._fixed else self._next_wanted(polls, checked_age)
        )
        return max(self.floor(polls), wanted)

    def age(self, n: int) -> float:
        """The age of the n-th poll (from 0) of a job polled on this plan, each poll the last look."""
        while len(self._ages) <= n:
            i = len(self._ages)
            self._ages.append(self.due(i, self._ages[-1] if self._ages else 0.0))
        return self._ages[n]

    def head(self, n: int) -> list[float]:
        return [self.age(i) for i in range(n)]


__all__ = [
    "BACKOFF",
    "FIRST_POLL_S",
    "HISTORY",
    "MAX_POLL_S",
    "Expectation",
    "Plan",
    "baseline_age",
    "baseline_polls",
    "dense_step",
    "finish_estimate",
]
