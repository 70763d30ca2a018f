"""Targets no path from the monitor reaches: confirmed DOWN by the poll that fails while cut off.

A target's DOWN waits for ``down_after`` failed polls because one lost poll on a radio link is not
news. Below a node confirmed DOWN that wait tells nothing more: every path from the monitor to the
target passes through that node, so nothing can answer its polls. Waiting for them cost customers
below a fallen tower three polls of their own before correlation even saw them (issue 12:
the first notice ~40 s after the cut at a 10 s interval, while the tower's outage had opened at
14 s). So a poll that fails while the target is cut off confirms it DOWN at once: it is DOWN when
the outage opens, and its customers are in the ``opened`` event. A target that answers is never
confirmed DOWN by this (a node DOWN only to the monitor's eyes, its management address lost while
it forwards traffic: what is below keeps answering and nobody is told).

Not below a top-level or vantage node, nor below a node whose failure such a node explains:
everything failing at once there is the monitor's own view breaking (blindness, judged by
correlation), and a short blindness must not confirm every target DOWN.

The daemon's polling stage, ``monitor replay`` and the scenario runner all ask this at the same
point (a failed poll of a target not DOWN), with the confirmed states they hold, so replay stays
the daemon's twin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from monitor.state import Observation, State, StateChange, TargetState

#: deeper than any real ISP's tree; only a guard (the inventory loader refuses cycles)
_MAX_DEPTH = 64


class CutOff:
    """Which confirmed-DOWN node, if any, cuts a target off from the monitor."""

    def __init__(
        self, parents: Mapping[str, Sequence[str]], lead: Mapping[str, float], vantage: Iterable[str] = (),
    ) -> None:
        self.parents = parents
        #: per target: how long before its DOWN the polls that confirmed it began to fail
        #: ((down_after - 1) x its interval)
        self.lead = lead
        self.vantage = frozenset(vantage)

    def cut_by(self, tid: str, down_since: Callable[[str], float | None], answered: float) -> str | None:
        """The node confirmed DOWN that every path to ``tid`` passes (by its first uplinks), or None.

        ``down_since``: since when a target is confirmed DOWN (None: it is not); the polls that
        confirmed it began to fail ``lead`` earlier. ``answered``: about when ``tid`` last answered
        (now less its failed polls times its interval). A node that began to fail only after that
        cuts nothing: ``tid`` answered while it was failing, so the node's DOWN is a lossy link or
        its own address, not a cut (rain fade: a tower losing whole polls while the CPEs behind it
        answer one poll in two). A real cut
        silences everything below at once, so each target's last answer comes before it. With
        redundant uplinks each one must be cut; the node named is the first uplink's.
        """
        return self._cut(tid, down_since, answered, 0)

    def _cut(self, tid: str, down_since: Callable[[str], float | None], answered: float, depth: int) -> str | None:
        ps = self.parents.get(tid)
        if not ps or depth > _MAX_DEPTH:
            return None
        first: str | None = None
        for p in ps:
            since = down_since(p)
            if since is not None and since - self.lead.get(p, 0.0) > answered and self._cuts(p, down_since):
                node: str | None = p
            else:
                node = self._cut(p, down_since, answered, depth + 1)
            if node is None:
                return None  # this uplink may still carry the polls
            first = first or node
        return first

    def _cuts(self, node: str, down_since: Callable[[str], float | None]) -> bool:
        """A DOWN ``node`` is the network's failure, not the monitor's view breaking."""
        if node in self.vantage or not self.parents.get(node):
            return False
        seen: set[str] = set()
        todo = list(self.parents[node])
        while todo:
            a = todo.pop()
            if a in seen:
                continue
            seen.add(a)
            ps = self.parents.get(a)
            if (a in self.vantage or not ps) and down_since(a) is not None:
                return False  # a top-level or vantage node above is down: blindness territory
            if ps and len(seen) <= 4 * _MAX_DEPTH:
                todo.extend(ps)
        return True


def confirm_cut_off(
    prev: TargetState, cur: TargetState, obs: Observation, now: float, target: str, node: str,
) -> tuple[TargetState, StateChange]:
    """The DOWN a failed poll confirms for a target ``node`` cuts off (``cur``: ``step``'s result).

    The same state and change ``step`` gives when ``down_after`` is reached, with a reason that
    says why it came early.
    """
    n = cur.fail_streak
    detail = f": {obs.detail}" if obs.detail else ""
    reason = f"{n} failed poll{'' if n == 1 else 's'}, cut off below {node} (down){detail}"
    new = TargetState(State.DOWN, now, cur.fail_streak, cur.reach_streak, cur.ok_streak, cur.degraded_streak)
    return new, StateChange(target, prev.state, State.DOWN, now, reason, obs.cause)
