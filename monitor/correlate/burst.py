"""A burst is not churn: how unlikely k failures below one node within W are, given its normal rate.

The share rule (K endpoints and P % of those below a node within W) misses a burst under a big
node: wind turning a 60-CPE sector antenna drops 24 customers (40 %) in one minute while the AP
answers, and each became a ``single``. Churn is spread over hours; a burst is not. So a burst is
also judged against the subtree's *normal* failure rate, learned from what the engine judged
independent failures (``single`` incidents, when they resolve): with ``n`` endpoints below the
node and a rate ``r`` per endpoint and second, independent failures inside W are Poisson with mean
``mu = r * W * n``, and ``P(X >= k)`` below ``burst_odds`` means the k failures are not churn: a
``suspected`` incident whatever the share. K and W stay floors (at least K failures inside W).

The rate is learned per node (every endpoint below it) and per hour of day (UTC), over the last
``burst_history``, shrunk toward a prior so that a new install or a quiet subtree is sane:

* over all hours: ``r = (c + prior * n * T0) / (n * (T + T0))`` with ``c`` failures seen below the
  node in the observed time ``T`` and a prior of ``burst_prior`` failures per endpoint and day
  weighted as one day ``T0`` of observation;
* for the hour of day: ``r_h = (c_h + r * n * T0 / 24) / (n * (T_h + T0 / 24))``, so an hour
  with little history follows the node's overall rate and nights of churn raise only the night.

Everything here is a pure function of the failure history, the observed period and the time asked
about (the clock is injected): the engine adds failures as it resolves singles, and after a restart
the service rebuilds the same history from the store (``IncidentStore.single_history``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DAY = 86400.0
HOUR = 3600.0
PRIOR_WEIGHT = DAY  # the prior counts as this much observation


@dataclass(frozen=True, slots=True)
class NodeRate:
    """What was learned below one node (``monitor replay --rates``): rates per endpoint and day."""

    node: str
    endpoints: int
    failures: int  # independent failures below it inside the history
    rate_all: float
    peak: float  # the highest hour-of-day rate ...
    peak_hour: int  # ... and its UTC hour


@dataclass(frozen=True, slots=True)
class Burst:
    """Why k failures below a node are judged a burst (or not): for the incident and replay output."""

    node: str
    k: int  # unexplained endpoint failures below the node inside W
    n: int  # endpoints below the node
    window: float
    rate: float  # learned, per endpoint and day, at this hour of day
    rate_all: float  # learned, per endpoint and day, over all hours
    hour: int  # UTC hour of day the rate is for
    odds: float  # P(X >= k) for independent failures at that rate

    def describe(self) -> str:
        return (
            f"burst: {self.k} of {self.n} endpoints below {self.node} within {self.window:g}s; "
            f"learned rate {self.rate:.3g} failures/endpoint/day at {self.hour:02d}h UTC "
            f"({self.rate_all:.3g} over all hours); odds of that from independent failures {self.odds:.3g}"
        )


def poisson_tail(k: int, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu), accurate for tiny tails (summed upward from k, in logs)."""
    if k <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    if k <= mu:  # not a tail: one minus the (short) lower sum, no overflow for a big mean
        lower = sum(math.exp(j * math.log(mu) - mu - math.lgamma(j + 1)) for j in range(k))
        return max(0.0, 1.0 - lower)
    log_term = k * math.log(mu) - mu - math.lgamma(k + 1)
    total, term, i = 0.0, 1.0, k
    while True:  # sum_{j>=k} mu^j/j! relative to the first term: decreasing, since k > mu
        total += term
        i += 1
        term *= mu / i
        if term < total * 1e-17 or i > k + 10_000:
            break
    value = math.exp(log_term) * total
    return min(1.0, value)


def hours_observed(start: float, now: float) -> list[float]:
    """Seconds of [start, now) falling in each UTC hour of day (24 buckets)."""
    out = [0.0] * 24
    if now <= start:
        return out
    full, rest = divmod(now - start, DAY)
    if full:
        for h in range(24):
            out[h] = full * HOUR
    t = start + full * DAY
    while rest > 0:
        h = int((t % DAY) // HOUR)
        step = min(rest, HOUR - (t % HOUR))
        out[h] += step
        t += step
        rest -= step
    return out


class FailureRates:
    """Independent endpoint failures below each node, per hour of day, over a sliding history.

    ``add`` costs one counter per ancestor; the rate is computed only when a burst is judged.
    """

    def __init__(
        self, ancestors: Mapping[str, tuple[str, ...]], below: Mapping[str, int], *,
        history: float, prior: float, start: float | None = None,
    ) -> None:
        self.ancestors = ancestors
        self.below = below
        self.history = history
        self.prior = prior / DAY  # per endpoint and second
        self.start = start  # observed since (None: nothing observed yet, the prior alone)
        self.events: list[tuple[float, str]] = []  # (failure time, endpoint), by time
        self.counts: dict[str, list[int]] = {}

    @classmethod
    def from_history(
        cls, ancestors: Mapping[str, tuple[str, ...]], below: Mapping[str, int], failures: Iterable[tuple[float, str]],
        *, history: float, prior: float, start: float,
    ) -> FailureRates:
        """The rates a run would have learned from ``failures`` ((ts, endpoint), any order) since ``start``."""
        rates = cls(ancestors, below, history=history, prior=prior, start=start)
        for ts, endpoint in sorted(failures):
            rates.add(ts, endpoint)
        return rates

    def add(self, ts: float, endpoint: str) -> None:
        anc = self.ancestors.get(endpoint)
        if anc is None:
            return
        if self.events and ts < self.events[-1][0]:
            insort(self.events, (ts, endpoint))  # added when it resolves, counted when it failed
        else:
            self.events.append((ts, endpoint))
        h = int((ts % DAY) // HOUR)
        for a in anc:
            c = self.counts.get(a)
            if c is None:
                c = self.counts[a] = [0] * 24
            c[h] += 1

    def _prune(self, now: float) -> None:
        events = self.events
        if not events or events[0][0] >= now - self.history:
            return
        cut = bisect_left(events, (now - self.history,))
        for ts, endpoint in events[:cut]:
            h = int((ts % DAY) // HOUR)
            for a in self.ancestors[endpoint]:
                self.counts[a][h] -= 1
        del events[:cut]

    def rate(self, node: str, now: float) -> tuple[float, float, int]:
        """(rate at this hour of day, rate over all hours), per endpoint and second; and the hour."""
        hourly, total = self.rates(node, now)
        h = int((now % DAY) // HOUR)
        return hourly[h], total, h

    def rates(self, node: str, now: float) -> tuple[list[float], float]:
        """(the rate at each UTC hour of day, the rate over all hours), per endpoint and second, at ``now``."""
        self._prune(now)
        n = max(1, self.below.get(node, 0))
        start = max(self.start if self.start is not None else now, now - self.history)
        exposure = hours_observed(start, now)
        c = self.counts.get(node) or [0] * 24
        total = (sum(c) + self.prior * n * PRIOR_WEIGHT) / (n * (sum(exposure) + PRIOR_WEIGHT))
        w = PRIOR_WEIGHT / 24
        return [(c[h] + total * n * w) / (n * (exposure[h] + w)) for h in range(24)], total

    def summary(self, now: float) -> list[NodeRate]:
        """Every node with failures below it in the history, most failures first (then by id)."""
        self._prune(now)
        out = []
        for node, c in self.counts.items():
            if not sum(c):
                continue
            hourly, total = self.rates(node, now)
            peak = max(range(24), key=lambda h: hourly[h])
            out.append(NodeRate(node, self.below.get(node, 0), sum(c), total * DAY, hourly[peak] * DAY, peak))
        return sorted(out, key=lambda r: (-r.failures, r.node))

    def judge(self, node: str, k: int, window: float, now: float) -> Burst:
        """The odds of ``k`` independent failures below ``node`` inside ``window`` at the learned rate."""
        at_hour, total, h = self.rate(node, now)
        n = self.below.get(node, 0)
        odds = poisson_tail(k, at_hour * window * n)
        return Burst(node, k, n, window, at_hour * DAY, total * DAY, h, odds)
