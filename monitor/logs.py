"""Structured logging: one line per event, key=value (logfmt) or JSON.

Call sites pass context as ``extra={"kv": {...}}`` (or use :func:`event`), so the same record renders
as ``ts=... level=info msg="target down" target=ap-1 reason="3 consecutive failed polls"`` or as
JSON. Values are rendered with ``str()``, so a :class:`monitor.secret.Secret` shows only
its source, never its value. A message never carries ``key=value`` text itself (JSON mode would
lose it as a field): ``tests/test_log_fields.py`` checks every logging call in ``monitor/``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

_RESERVED = {"ts", "level", "logger", "msg"}


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def _timestamp(record: logging.LogRecord) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{base}.{int(record.msecs):03d}Z"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    kv = getattr(record, "kv", None)
    return dict(kv) if isinstance(kv, dict) else {}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        parts += [f"{k if k not in _RESERVED else 'ctx_' + k}={_quote(v)}" for k, v in _context(record).items()]
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _context(record).items():
            plain = isinstance(v, int | float | bool) or v is None
            doc[k if k not in _RESERVED else "ctx_" + k] = v if plain else str(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(fmt: str = "logfmt", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, level: int, msg: str, **kv: object) -> None:
    """Log one structured event: ``event(log, logging.WARNING, "target down", target="ap-1")``."""
    logger.log(level, msg, extra={"kv": kv})


class Episode:
    """A failure that repeats every attempt, logged as one line when it starts and one when it ends.

    The rule "log on state changes, never per failed attempt" for things retried every second (a
    store that refuses writes, a timer): ``failed()`` on each failure, ``ok()`` on each success.
    Several parts may share one episode (``part``: each delivery worker and the delivery timer
    writing one outbox): it starts with the first part that fails and ends when every part that
    failed has succeeded again, so parts that meet the fault at different moments make one episode.
    """

    def __init__(self, logger: logging.Logger, failing: str, recovered: str,
                 changed: Callable[[bool], None] | None = None) -> None:
        """``changed``: told True when an episode starts and False when it ends (a gauge, a counter)."""
        self.logger, self.failing, self.recovered = logger, failing, recovered
        self.changed = changed
        self._parts: set[str] = set()

    @property
    def active(self) -> bool:
        return bool(self._parts)

    def failed(self, part: str = "", **kv: object) -> None:
        if not self._parts:
            event(self.logger, logging.ERROR, self.failing, **kv)
            if self.changed is not None:
                self.changed(True)
        self._parts.add(part)

    def ok(self, part: str = "", **kv: object) -> None:
        if part not in self._parts:
            return
        self._parts.discard(part)
        if not self._parts:
            event(self.logger, logging.WARNING, self.recovered, **kv)
            if self.changed is not None:
                self.changed(False)
