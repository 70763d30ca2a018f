"""SNMP reachability news, one line per poll pass instead of one warning per target.

A network whose agents are off or filtered (the bundled example, a new site, a wrong community)
would otherwise log one "snmp not answering" line per SNMP node at start, 38 lines for the
example. Changes are gathered and told together when the pass ends: a pass ends when a target
already noted in it is polled again (the fastest target's interval), so no clock is needed and
nothing waits longer than one poll interval. Only changes are news (the rule: log on change).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

#: how many target ids (sorted) a summary line names before "…"
NAMED = 10


@dataclass(frozen=True, slots=True)
class Line:
    """One log line to write: level, message, key=value context."""

    level: int
    msg: str
    kv: dict[str, object]


@dataclass(slots=True)
class SnmpNews:
    """Per-target SNMP reachability and the changes of the current pass (only the daemon writes it)."""

    ok: dict[str, bool] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # target → error, this pass
    back: list[str] = field(default_factory=list)       # answering again, this pass
    seen: set[str] = field(default_factory=set)         # noted in this pass

    def note(self, target: str, ok: bool, error: str = "") -> list[Line]:
        """One SNMP poll's outcome; returns the previous pass's summary when this poll starts a new one."""
        out = self.flush() if target in self.seen else []
        self.seen.add(target)
        before = self.ok.get(target)
        self.ok[target] = ok
        if before != ok and not (before is None and ok):  # first contact answering is not news
            if ok:
                self.back.append(target)
            else:
                self.lost[target] = error
        return out

    def forget(self, target: str) -> None:
        """A target removed by a reload: no news about it any more."""
        self.ok.pop(target, None)
        self.lost.pop(target, None)
        self.seen.discard(target)
        if target in self.back:
            self.back.remove(target)

    def flush(self) -> list[Line]:
        """The summary of the pass so far (at most two lines), and a new pass begins."""
        out = []
        if self.lost:
            errors = Counter(e.split(":", 1)[0].strip() or "error" for e in self.lost.values())
            out.append(Line(logging.WARNING, f"snmp not answering on {_count(len(self.lost))}",
                            {"targets": _named(list(self.lost)), "error": ", ".join(
                                f"{e} ({n})" if len(errors) > 1 else e for e, n in errors.most_common())}))
        if self.back:
            out.append(Line(logging.INFO, f"snmp answering again on {_count(len(self.back))}",
                            {"targets": _named(self.back)}))
        self.lost, self.back, self.seen = {}, [], set()
        return out


def _count(n: int) -> str:
    return "1 target" if n == 1 else f"{n} targets"


def _named(targets: list[str]) -> str:
    names = ", ".join(sorted(targets)[:NAMED])
    return names + (f" … (+{len(targets) - NAMED})" if len(targets) > NAMED else "")
