"""The bundled story and the probe that plays it.

A scenario is a list of steps: at a time (seconds at speed 1), some targets stop answering for a
while — with everything behind them when ``below`` is set, as a tower without power takes its APs
and customers with it. :class:`ScriptedProbe` implements the probe protocol over that timeline so
the daemon cannot tell it from the network: it polls, judges and correlates exactly as usual.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from monitor.correlate.topology import children_of, descendants
from monitor.errors import ConfigError
from monitor.inventory.model import Inventory, Target
from monitor.probes.base import IcmpResult, ProbeResult

BUNDLED = Path(__file__).parent / "scenario.yaml"


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds after the start, at speed 1
    duration: float
    down: tuple[str, ...]
    below: bool
    say: str
    expect: str

    @property
    def end(self) -> float:
        return self.at + self.duration


@dataclass(frozen=True, slots=True)
class Window:
    node: str
    start: float
    end: float
    reason: str


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    end: float
    steps: tuple[Step, ...]
    maintenance: tuple[Window, ...]

    def outages(self, inv: Inventory) -> dict[str, list[tuple[float, float]]]:
        """Per target, the (start, end) spans in which it does not answer."""
        children = children_of(inv.targets.values())
        out: dict[str, list[tuple[float, float]]] = {}
        for step in self.steps:
            for down in step.down:
                for tid in (down, *(descendants(children, down) if step.below else ())):
                    out.setdefault(tid, []).append((step.at, step.end))
        return out


def load(path: Path = BUNDLED, targets: set[str] | None = None) -> Scenario:
    """Read a scenario; a mistake names the file and the step (this file is meant to be edited)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the scenario: {exc}") from exc
    problems: list[str] = []

    def need(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        value = d.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{path}: {where}.{key}: missing or of the wrong type")
        return value

    steps = []
    for i, raw in enumerate(doc.get("steps") or []):
        where = f"steps[{i}]"
        at, dur = need(raw, "at", (int, float), where), need(raw, "for", (int, float), where)
        down = need(raw, "down", list, where) or []
        for tid in down:
            if targets is not None and tid not in targets:
                problems.append(f"{path}: {where}.down: unknown target {tid!r}")
        steps.append(Step(float(at or 0), float(dur or 0), tuple(down), bool(raw.get("below", False)),
                          str(raw.get("say", "")), str(raw.get("expect", ""))))
    windows = []
    for i, raw in enumerate(doc.get("maintenance") or []):
        where = f"maintenance[{i}]"
        node = need(raw, "node", str, where)
        start, end = need(raw, "start", (int, float), where), need(raw, "end", (int, float), where)
        windows.append(Window(str(node), float(start or 0), float(end or 0), str(raw.get("reason", ""))))
    end = need(doc, "end", (int, float), "scenario")
    if problems:
        raise ConfigError(problems)
    return Scenario(str(doc.get("title", "")), float(end), tuple(steps), tuple(windows))


class ScriptedProbe:
    """An ICMP probe that answers from the timeline instead of the network (never sends a packet).

    ``elapsed()`` gives the scenario time (seconds at speed 1) of each poll.
    """

    kind = "icmp"
    mode = "scripted"

    def __init__(self, outages: dict[str, list[tuple[float, float]]], elapsed: Callable[[], float]) -> None:
        self.outages = outages
        self.elapsed = elapsed

    @classmethod
    def started_at(cls, outages: dict[str, list[tuple[float, float]]], t0: float, speed: float) -> ScriptedProbe:
        return cls(outages, lambda: (time.time() - t0) * speed)

    async def start(self) -> None:
        return None

    def answers(self, target: str, t: float) -> bool:
        return not any(a <= t < b for a, b in self.outages.get(target, ()))

    async def poll(self, target: Target, timeout: float) -> ProbeResult:
        sent = target.polling.icmp_count
        if not self.answers(target.id, self.elapsed()):
            return IcmpResult(target.id, target.address, sent, 0, error="timeout")
        rtt = 1.0 + zlib.crc32(target.id.encode()) % 400 / 100  # a stable 1-5 ms per target
        return IcmpResult(target.id, target.address, sent, sent, rtt, rtt, rtt, 0.0)

    async def close(self) -> None:
        return None


__all__ = ["BUNDLED", "Scenario", "ScriptedProbe", "Step", "Window", "load"]
