"""When to ask a provider about a job: a poll plan learned from how long jobs of its kind took.

A job's *age* is counted from when the provider accepted it (uploads and other work before the
submission are not the provider's time). A plan is a list of ages at which to poll:

* With no history for the kind of job (provider, operation and model), the plan is the fixed
  backoff every job used before: first poll after ``FIRST_POLL_S``, each gap ``BACKOFF`` times the
  last, at most ``MAX_POLL_S`` apart. It is also the *budget*: no plan ever makes its n-th poll
  before the fixed backoff's n-th, so no job is polled more often than that backoff would poll it.
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


class Plan:
    """The ages at which one job is polled; see the module docstring."""

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
        if webhook:
            nominal, self._tail_gap = self._fallback(expectation)
        elif expectation is None:
            nominal, self._tail_gap = list(_baseline_head()[0]), MAX_POLL_S
        else:
            nominal, self._tail_gap = self._learned(expectation)
        budgeted: list[float] = []
        for i, t in enumerate(nominal):
            floor = budgeted[-1] + DENSE_MIN_S / 2 if budgeted else 0.0
            budgeted.append(max(t, baseline_age(i), floor))
        self._seed = seed
        self._jitter = jitter
        rng = random.Random(f"{seed}")
        self._ages: list[float] = []
        for i, t in enumerate(budgeted):
            before = t - (budgeted[i - 1] if i else 0.0)
            after = (budgeted[i + 1] - t) if i + 1 < len(budgeted) else self._tail_gap
            self._ages.append(t + (2 * rng.random() - 1) * jitter * min(before, after))
        self._last = budgeted[-1]

    # -- building ---------------------------------------------------------------------------------

    @staticmethod
    def _learned(e: Expectation) -> tuple[list[float], float]:
        step = dense_step(e)
        start = max(DENSE_MIN_S, e.early_s - step / 2)
        end = e.late_s + step / 2
        count = max(2, math.ceil((end - start) / step - 1e-9) + 1)
        dense = [start + i * step for i in range(count)]
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
        return early[:keep] + dense + after, cap

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

    def age(self, n: int) -> float:
        """The age of the n-th poll (from 0)."""
        if n < len(self._ages):
            return self._ages[n]
        k = n - len(self._ages) + 1
        jitter = (2 * random.Random(f"{self._seed}:{n}").random() - 1) * self._jitter * self._tail_gap
        return self._last + k * self._tail_gap + jitter

    def head(self, n: int) -> list[float]:
        return [self.age(i) for i in range(n)]

    def due(self, polls: int, checked_age: float) -> float:
        """The age at which the next poll is due, after ``polls`` polls with the last look at the job
        (a poll, or the submission's answer) at ``checked_age``: the first planned age not yet used
        up by a poll that also lies at least half its gap after that look. Polls made off the plan (a
        read, a webhook, a last look before answering) use up planned ones instead of adding to them,
        and a job resumed long after its plan was due catches up with one poll, not a burst."""
        i = max(0, polls)
        if i >= len(self._ages) and checked_age > self._last:
            # Far into the even tail: jump straight to where the last look was.
            i = max(i, len(self._ages) - 1 + math.ceil((checked_age - self._last) / self._tail_gap))
        while True:
            t = self.age(i)
            gap = t - self.age(i - 1) if i > 0 else t
            if t >= checked_age + gap / 2:
                return t
            i += 1


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
]
