"""THE retry policy of every delivery: exponential back-off with jitter, a deadline, classified errors.

Why one helper: SMTP relays, brokers, RT and webhooks fail in the same few ways (down, throttling,
rejected for good). Every adapter translates its library's errors into :class:`DeliveryRetryable`
or :class:`DeliveryPermanent` with a short ``reason`` (a metrics label), and the workers (durable
outbox rows) and in-memory callers (:func:`call_with_retry`) decide the same way when to try again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from monitor.clock import Clock
from monitor.delivery.config import RetrySettings
from monitor.errors import MonitorError

T = TypeVar("T")


class DeliveryError(MonitorError):
    """A delivery attempt failed. ``reason`` is a short stable label (metrics, logs)."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


class DeliveryRetryable(DeliveryError):
    """Worth trying again later: connection refused, timeout, 4xx SMTP reply, HTTP 429/5xx."""


class DeliveryPermanent(DeliveryError):
    """Trying again cannot help: the receiver rejected this item for good (bad address, HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    at: float  # when to try again (epoch seconds); meaningless when retry is False
    reason: str


def backoff(policy: RetrySettings, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before attempt ``attempt + 1`` (``attempt`` >= 1 failed so far), jittered downwards.

    The jitter spreads the retries of a whole fan-out (10,000 notices failing together when the
    relay went down) so they do not hit the relay again in one burst when it comes back.
    """
    base = min(policy.maximum, policy.initial * policy.factor ** max(0, attempt - 1))
    r = (rng or random).random()
    return base * (1.0 - policy.jitter * r)


def decide(
    policy: RetrySettings, error: BaseException, attempt: int, queued_at: float, now: float,
    rng: random.Random | None = None,
) -> Decision:
    """After ``attempt`` failed attempts: retry (and when) or give up, with the reason to record."""
    reason = error.reason if isinstance(error, DeliveryError) else type(error).__name__
    if isinstance(error, DeliveryPermanent):
        return Decision(False, now, reason)
    at = now + backoff(policy, attempt, rng)
    if at > queued_at + policy.deadline:
        return Decision(False, now, "deadline")
    return Decision(True, at, reason)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetrySettings,
    clock: Clock,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[DeliveryError, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run ``fn`` until it succeeds, raises :class:`DeliveryPermanent` or the deadline passes.

    For in-memory work with nothing to persist (reconnecting to the broker); outbox rows use
    :func:`decide` so the schedule survives a restart.
    """
    start = clock.now()
    attempt = 0
    while True:
        try:
            return await fn()
        except DeliveryRetryable as exc:
            attempt += 1
            d = decide(policy, exc, attempt, start, clock.now(), rng)
            if not d.retry:
                raise
            if on_retry is not None:
                on_retry(exc, d.at - clock.now())
            await sleep(max(0.0, d.at - clock.now()))
