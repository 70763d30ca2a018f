"""Delivery metrics, registered on the daemon's :data:`monitor.selfmetrics.REGISTRY`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from monitor.selfmetrics import NS, REGISTRY

QUEUED = Counter("delivery_queued", "Outbox items queued, by channel", ["channel"], namespace=NS, registry=REGISTRY)
DELIVERED = Counter(
    "delivery_delivered", "Outbox items delivered, by channel", ["channel"], namespace=NS, registry=REGISTRY,
)
FAILED = Counter(
    "delivery_failed", "Outbox items given up (permanent error or deadline), by channel and reason",
    ["channel", "reason"], namespace=NS, registry=REGISTRY,
)
RETRIES = Counter(
    "delivery_retries", "Failed attempts that will be retried, by channel and reason", ["channel", "reason"],
    namespace=NS, registry=REGISTRY,
)
PENDING = Gauge("delivery_pending", "Outbox items waiting, by channel", ["channel"], namespace=NS, registry=REGISTRY)
OLDEST = Gauge(
    "delivery_oldest_pending_seconds", "Age of the oldest waiting outbox item, by channel", ["channel"],
    namespace=NS, registry=REGISTRY,
)
