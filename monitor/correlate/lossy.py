"""Lossy links in the correlation engine (rule 11): a node whose own polls show loss explains the
failures below it, as one ``degraded`` incident at the highest such node (the pure helpers are in
``degraded.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from monitor.correlate.degraded import loss_top, shows_loss
from monitor.correlate.engine_state import DYING_GASP, LOS, EngineState
from monitor.correlate.incidents import Incident, format_ts
from monitor.state import State, StateChange


class LossyLinks(EngineState):
    """Which nodes show loss, their ``degraded`` incidents, and folding what fails below into them."""

    def restore_loss(self, last_answers: Mapping[str, tuple[float, str]]) -> None:
        """Before ``restore``: nodes down or degraded whose last answers (ts, reason) showed loss."""
        for t, (ts, reason) in sorted(last_answers.items()):
            if t in self.topo and shows_loss(reason):
                self.lossy[t] = ts
                self._loss_why[t] = reason

    def _lossy_rejudge(self) -> list[tuple[float, str, float]]:
        """On restore: lossy nodes down at the root of their degraded incident are judged again every
        settle period until they have been down ``degraded_settle`` (see ``_evaluate``): resume that
        chain where it would be without the restart (the same float steps, so the same times)."""
        out = []
        for t, since in self.down.items():
            inc = self.incidents.get(t)
            if inc is not None and t in self.lossy and self.member.get(t) == t and self.basis[inc.id] == "degraded":
                due = since + self.s.settle
                while due < self.now:
                    due += self.s.settle
                out.append((due, t, since))
        return out

    def _loss_changed(self, c: StateChange) -> None:
        """A node's own polls started or stopped showing loss (its DEGRADED state, by loss)."""
        tid, lossy = c.target, self.lossy
        inc = self.incidents.get(tid)
        if c.new is State.DEGRADED and shows_loss(c.reason):
            if tid in lossy:
                return
            lossy[tid] = c.ts
            self._loss_why[tid] = c.reason
            self._fading.pop(tid, None)
            if inc is not None and self.basis[inc.id] != "power":
                self._keep_open(inc)  # the loss is back: no grace, no hold-down while it lasts (a power cut's aside)
            self._fold_below(tid)
        elif lossy.pop(tid, None) is not None and inc is not None and tid not in self.down:
            self._shrunk(inc)  # loss over: grace for what is still down below, then the hold-down
            if self.basis[inc.id] == "degraded" and inc.grace_from is not None:
                self._fading[tid] = inc.grace_from

    def _open_degraded(self, node: str) -> Incident:
        """A ``degraded`` incident at a lossy node, saying in its detail what its polls show."""
        inc = self._open(node, "degraded")
        since = self.lossy.get(node)
        if since is not None:
            why = self._loss_why.get(node, "loss").removeprefix("answering again but ")
            inc.detail = f"lossy link: {node} answering with {why} since {format_ts(since)}; the failures below are its"
        return inc

    def _loss_top(self, root: str) -> str | None:
        """The node whose loss explains a failure at ``root`` (``loss_top``), or the root of an outage
        above that node in its grace period: the loss below a link that just came back is what it
        left behind (the tower below a backhaul reports the same rain's loss a poll longer), and a
        failure there was a second incident beside the outage (issue 19, scenario
        ``rain_fade_new_failure_in_grace``). Judged on what holds now, so a restart decides the same."""
        fading = self._fading
        for a in [a for a, since in fading.items() if (i := self.incidents.get(a)) is None or i.grace_from != since]:
            del fading[a]  # its grace period ended or the incident closed
        top = loss_top(self.topo.ancestors.get(root, ()), self.lossy, fading)
        if top is None:
            return None
        for a in self.topo.ancestors[top]:  # deepest first: the highest one wins
            inc = self.incidents.get(a)
            if (
                inc is not None and inc.grace_from is not None and not inc.was_outage
                and self.basis[inc.id] == "outage" and a not in self.down
            ):
                top = a
        return top

    def _dark_above(self, root: str) -> str | None:
        """The highest node above ``root`` confirmed DOWN that every path from ``root`` up passes through.

        ``root`` has a parent that answers (the root walk stopped there), so such a node is not dead:
        what answers below it reaches the monitor through it. It is a lossy link whose polls were lost
        whole three times in a row, or its own address failing, and the failures below it are its
        incident's (issue 19: a backhaul confirmed DOWN so, with the failures under it judged as singles
        and counted toward ``core``'s mass rule, opened a ``suspected`` incident there beside its
        outage). Not with redundant uplinks where a path avoids it: that node may really be down.
        """
        down, parents, ancestors = self.down, self.topo.parents, self.topo.ancestors
        if down.keys().isdisjoint(ancestors[root]):
            return None  # nothing down above (every failure but a dark node's: one set test)
        dark = None
        for a in ancestors[root]:  # deepest first: the highest one wins
            if a in down and _dominates(a, root, parents, ancestors):
                dark = a
        return dark

    def _behind_dark(self, t: str) -> bool:
        """A failure at ``t`` that ``_desired`` gives to a dark node above it (``_dark_above``):
        explained, so it counts toward no mass rule (an ONU reporting dying gasp or LOS is its cause's)."""
        return self.cause.get(t) not in (DYING_GASP, LOS) and self._dark_above(t) is not None

    def _fold_dark(self, inc: Incident) -> None:
        """An outage opening at a node that turns out dark (``_dark_above``: answering below it) takes
        the incidents opened below it just before, whose failures it now explains.

        A CPE behind the backhaul can be confirmed down and judged (a single) before the backhaul's
        third lost poll confirms it DOWN; judged now, it would be the backhaul's. Folded as
        ``_fold_below`` folds what opened just before a loss was confirmed (same horizon), not as
        rule 3's walk over the down subtree, which stops at the answering nodes.
        """
        node, ancestors = inc.root, self.topo.ancestors
        horizon = self.now - self.s.settle - 3 * self.s.interval - self.s.hold_down
        recent = [
            i for i in self.incidents.values()
            if i is not inc and i.opened_at >= horizon and node in ancestors.get(i.root, ())
            and self.basis[i.id] in ("single", "outage", "suspected") and self._dark_above(i.root) == node
        ]
        for old in sorted(recent, key=lambda i: i.seq):
            if old.id not in self.by_id:
                continue  # merged already by an earlier one's move
            moved = sorted(old.members, key=self.topo.sort_key)
            self._absorb(inc, moved)
            if old.id in self.by_id:
                self._merge(old, inc, [])

    def _attach_lossy(self, inc: Incident, tid: str) -> None:
        """A failure below a lossy node joins its incident, with the down subtree it explains."""
        if self.member.get(tid) == inc.root:
            return
        origin = self._topo_root(tid)
        targets = (tid,) if self.member.get(origin) == inc.root else self._down_subtree(origin)
        self._absorb(inc, targets)

    def _upgrade_degraded(self, inc: Incident) -> None:
        """The lossy node itself stayed down for its settle period: the link stopped, same incident."""
        self.basis[inc.id] = "outage"
        self._fading.pop(inc.root, None)
        self.changed.add(inc.id)
        self._set_kind(inc, "planned" if inc.kind == "planned" else "outage")
        self._absorb(inc, self._down_subtree(inc.root))

    def _fold_lossy_roots(self, inc: Incident) -> None:
        """A lossy node attached to ``inc``, or below the root of an outage or degraded incident ``inc``
        (down or lossy itself: what fails below is its failure, and loss adds up along the path), no
        longer explains anything itself. Its degraded incident, members or not, is folded into ``inc``
        (as rule 3 folds incidents below a newly found root), and so is its outage (a lossy link that
        stopped for a while below a loss confirmed later: scenario rain_fade_outage_below); not into a
        suspected one (a mass event above a rain fade is judged on its own)."""
        incidents, ancestors = self.incidents, self.topo.ancestors
        above = self.basis[inc.id] in ("outage", "degraded")
        for node in sorted({*self.lossy, *self._fading}, key=self.topo.sort_key):
            old = incidents.get(node)
            if (
                old is not None and old is not inc and self.basis[old.id] in ("degraded", "outage")
                and (self.member.get(node) == inc.root or (above and inc.root in ancestors.get(node, ())))
            ):
                self._merge(old, inc, [])

    def _fold_below(self, node: str) -> None:
        """Incidents opened below a node just before its loss was confirmed are its: merge them in.

        A loss is confirmed after ``degraded_after`` polls in a row that answer with loss (3 by
        default), and a poll lost whole starts that count again, while a target beyond it can be
        confirmed down, settled and judged earlier; incidents opened below within ``settle +
        3 × interval + hold_down`` are folded into the node's ``degraded`` incident (``merged``,
        ``into`` it), as blindness folds its early ones (a flicker's single waits out its hold-down).
        """
        if self.blind is not None:
            return
        top = self._loss_top(node) or node
        horizon = self.now - self.s.settle - 3 * self.s.interval - self.s.hold_down
        ancestors = self.topo.ancestors
        recent = [
            i for i in self.incidents.values()
            if i.opened_at >= horizon and i.root != top and top in ancestors.get(i.root, ())
            and self.basis[i.id] in ("single", "outage", "suspected", "degraded")
        ]
        if not recent:
            return
        into = self.incidents.get(top) or self._open_degraded(top)
        for old in sorted(recent, key=lambda i: i.seq):
            if old.id not in self.by_id:
                continue  # merged already by an earlier one's move
            moved = sorted(old.members, key=self.topo.sort_key)
            self._absorb(into, moved)
            if old.id in self.by_id:
                self._merge(old, into, [])
        self._check_clear(into)


def _dominates(
    a: str, x: str, parents: Mapping[str, tuple[str, ...]], ancestors: Mapping[str, tuple[str, ...]],
) -> bool:
    """Whether every path from ``x`` up to a top-level node passes through ``a`` (one above it)."""
    ps = parents[x]
    return bool(ps) and all(p == a or (a in ancestors[p] and _dominates(a, p, parents, ancestors)) for p in ps)
