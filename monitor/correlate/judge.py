"""What a settled failure is: its root, and which incident takes it (rules 2-5, 12 and 13 of
docs/correlation.md): outage, suspected (K and P, or a burst), power, fibre cut, degraded, single."""

from __future__ import annotations

from collections.abc import Mapping

from monitor.correlate.engine_state import DYING_GASP, LOS, MASS
from monitor.correlate.incidents import Incident, Kind
from monitor.correlate.lossy import LossyLinks


class Judgement(LossyLinks):
    """Judging a failure once its settle period is over (``_evaluate``), and the counts it needs."""

    def _evaluate(self, tid: str) -> None:  # noqa: C901 - one decision table of the rules
        if self.blind is not None or tid in self._vantage or tid not in self.down:
            return
        root, basis = self._desired(tid)
        if root in self._vantage:
            return
        if basis == "outage" and root in self.lossy and self.now - self.down[root] < self.s.degraded_settle:
            basis = "degraded"  # its last answers showed loss: an outage only once it stays down
            if tid == root:
                self._settle.append((self.now + self.s.settle, tid, self.down[tid]))  # judge it again then
        inc = self.incidents.get(root)
        if inc is None:
            inc = self._open_degraded(root) if basis == "degraded" else self._open(root, basis)
            if basis == "outage" and root in self.down:
                self._absorb(inc, self._down_subtree(root))
                self._fold_dark(inc)  # what was judged below it before it was confirmed DOWN
            elif basis == "outage":
                self._fibre_cut(inc)  # K and P of the ONUs below an answering port report LOS
            elif basis == "suspected":
                if self._burst is not None and self._burst.node == root:
                    inc.detail = self._burst.describe()  # the learned rate and the odds, for staff and replay
                self._absorb(inc, self._mass_members(root))
            elif basis == "power" and root not in self.topo.endpoint:
                self._absorb(inc, self._mass_members(root, DYING_GASP))
        elif basis == "outage" and self.basis[inc.id] in MASS and root in self.down:
            self._upgrade(inc)
        elif basis == "outage" and self.basis[inc.id] == "power" and root not in self.down:
            # a fibre cut where a power cut is open at the same node (ONUs directly below an OLT: the
            # two causes have one node): one incident, an outage, since the fibre needs the crew
            self.basis[inc.id] = "outage"
            self._set_kind(inc, "planned" if inc.kind == "planned" else "outage")
            self._fibre_cut(inc)
        elif basis == "outage" and tid == root and self.basis[inc.id] == "degraded":
            self._upgrade_degraded(inc)  # the lossy link really stopped: an outage now
        elif tid == root and basis == "outage" and self.member.get(tid) != root:
            self._absorb(inc, self._down_subtree(root))  # the root failed again within its hold-down
        if basis == "degraded":
            self._attach_lossy(inc, tid)
            return
        if self.member.get(tid) == root:
            return  # already attached (typically by the root's own walk over its subtree)
        if tid in self.topo.endpoint:
            self._absorb(inc, (tid,))
        elif tid != root:
            self._absorb(inc, self._down_subtree(tid))  # a node below the root, with what it explains

    def _desired(self, tid: str) -> tuple[str, Kind]:  # noqa: C901 - one decision table of the rules
        topo = self.topo
        root = self._topo_root(tid)
        # (an ONU whose OLT reports dying gasp or LOS failed for that reason, whatever the loss on the
        # links above: the OLT's table answered; scenario power_cut_beyond_rain_fade)
        cause_free = not (root == tid and self.cause.get(tid) in (DYING_GASP, LOS))
        if (self.lossy or self._fading) and cause_free:
            top = self._loss_top(root)
            if top is not None:
                dark = self._dark_above(root)  # confirmed DOWN above the loss: its incident takes it
                return (top, "degraded") if dark is None or dark not in topo.ancestors[top] else (dark, "outage")
        if root != tid or tid not in topo.endpoint:
            if cause_free and not self.down.keys().isdisjoint(topo.ancestors[root]):
                return self._dark_above(root) or root, "outage"
            return root, "outage"
        since = self.down[tid]
        cause = self.cause.get(tid) if self.cause else None
        for a in topo.ancestors[tid]:
            inc = self.incidents.get(a)
            if inc is None or a in self.down:
                continue
            basis = self.basis[inc.id]
            if basis == "suspected":
                return a, "suspected"  # an open mass incident above takes it
            if cause is not None and (
                (basis == "power" and cause == DYING_GASP) or (basis == "outage" and cause == LOS and inc.was_outage)
            ):
                return a, basis  # an open power cut, or fibre cut at an answering port, takes the same cause
            if basis == "outage" and self.member.get(tid) == a:
                # taken while its node was down (a flap shorter than the settle period): the node
                # failed, so the incident stays a mass incident with it until its grace ends
                return a, "outage"
            if basis == "outage" and inc.grace_from is not None and since <= inc.grace_from + self.s.interval:
                # it failed while that root was down (or was confirmed just after it came back):
                # part of that outage until its grace period ends, not an independent failure
                return a, "outage"
        if cause_free:
            dark = self._dark_above(tid)  # after the open incidents above, which take it first (cheaper too)
            if dark is not None:
                return dark, "outage"  # confirmed DOWN while a node below it answers: its failures, not ours
        self._prune_window()
        if cause is not None and cause in (DYING_GASP, LOS):
            node = self._cause_mass(tid, cause)
            if node is not None:
                return node, "power" if cause == DYING_GASP else "outage"
            if cause == DYING_GASP:
                return tid, "power"  # the customer's own power: no network failure
        k, share = self.s.min_endpoints, self.s.min_share
        rc, below = self._counts(), topo.endpoints_below
        # rc counts every endpoint failed inside W: a cheap upper bound; the exact count is needed
        # only where that bound already meets the rule
        # (with the burst rule on, the share is no bound: a burst under a big node may be far below P)
        bursts = self.s.burst_odds > 0
        nodes = [
            a for a in topo.ancestors[tid]
            if rc[a] >= k and a not in self.down and a not in self._vantage
            and (bursts or rc[a] * 100.0 >= share * below[a])
        ]
        if not nodes:
            return tid, "single"
        counts = self._unexplained_counts(nodes)
        choice: str | None = None
        self._burst = None
        for a in nodes:
            n = counts[a]
            if n < k:
                continue
            burst = None
            if n * 100.0 < share * below[a]:
                if not bursts:
                    continue
                # under P: a mass incident only if that many independent failures are improbable
                burst = self.rates.judge(a, n, self.s.window, self.now)
                if burst.odds >= self.s.burst_odds or not self._burst_beyond(a, n, choice, counts):
                    continue
            # the deepest node meeting the rule, raised only to a node that explains more failures
            if choice is None or n > counts[choice]:
                choice = a
                self._burst = burst
        if choice is not None:
            return choice, "suspected"
        return tid, "single"

    def _cause_mass(self, tid: str, cause: str) -> str | None:
        """The node a failure with ``cause`` (dying gasp or LOS) is a mass event of, or None.

        K and P over the failures inside W with the *same* cause below each answering node above
        ``tid`` that no open incident explains, the deepest node meeting them, raised only to a node
        explaining more (rule 4's choice). Counted per cause, because a power cut in half an OLT's
        area and a fibre cut on one of its ports at the same time are two causes: counted together
        they were one suspected incident that sent a crew to a blackout and told nobody about the cut.
        """
        topo, down, member, causes = self.topo, self.down, self.member, self.cause
        parents, ancestors, below = topo.parents, topo.ancestors, topo.endpoints_below
        k, share = self.s.min_endpoints, self.s.min_share
        above = [a for a in ancestors[tid] if a not in down and a not in self._vantage]
        if not above:
            return None
        wanted = set(above)
        counts = dict.fromkeys(above, 0)
        for t in self._window():
            if causes.get(t) != cause:
                continue
            key = member.get(t)
            if (key is not None and key != t) or all(p in down for p in parents[t]):
                continue  # explained: by an incident above it, or by a node down above it
            for a in ancestors[t]:
                if a in wanted:
                    counts[a] += 1
        choice: str | None = None
        for a in above:
            n = counts[a]
            if n >= k and n * 100.0 >= share * below[a] and (choice is None or n > counts[choice]):
                choice = a
        return choice

    def _burst_beyond(self, node: str, n: int, deeper: str | None, counts: Mapping[str, int]) -> bool:
        """A burst at ``node`` above the ``deeper`` node already chosen must stand without that group.

        The deeper group is one cause (its own suspected incident), so it counts as one failure: four
        of an AP's six CPEs plus one churn CPE elsewhere are two events below the core, not five
        improbable independent ones (the bundled demo told the churn subscriber of a core failure).
        """
        events = self._independent_events(node, deeper)
        return self.rates.judge(node, min(n, events), self.s.window, self.now).odds < self.s.burst_odds

    def _independent_events(self, node: str, deeper: str | None) -> int:
        """Unexplained failures below ``node`` inside W, each group below it meeting K and P counted once.

        Whatever endpoint is judged first: one CPE elsewhere judged before three of ap-3's four had
        their own group chosen must not make them four independent failures below the core.
        """
        k, share, below = self.s.min_endpoints, self.s.min_share, self.topo.endpoints_below
        parents, ancestors, down, member = self.topo.parents, self.topo.ancestors, self.down, self.member
        causes, downk = self.cause, down.keys()
        dark = not downk.isdisjoint(self.topo.endpoints_below.keys())  # a node down at all (few nodes)
        failed: list[tuple[str, ...]] = []
        cnt: dict[str, int] = {}
        for t in self._window():
            anc = ancestors[t]
            if node not in anc:
                continue
            key = member.get(t)
            if (key is not None and key != t) or all(p in down for p in parents[t]) or causes.get(t) == DYING_GASP:
                continue
            if dark and not downk.isdisjoint(anc) and self._behind_dark(t):
                continue
            inner = anc[: anc.index(node)]
            failed.append(inner)
            for a in inner:
                cnt[a] = cnt.get(a, 0) + 1
        groups: set[str] = set()
        singles = 0
        for inner in failed:
            g = deeper if deeper in inner else next(
                (a for a in inner if a not in down and cnt[a] >= k and cnt[a] * 100.0 >= share * below[a]), None,
            )
            if g is None:
                singles += 1
            else:
                groups.add(g)
        return singles + len(groups)

    def _unexplained_counts(self, nodes: list[str]) -> dict[str, int]:
        """Endpoints failed inside W below each of ``nodes`` that no open incident explains yet.

        An endpoint behind a down node, or attached to an outage or suspected incident, is already
        explained: counted toward a mass incident higher up, a tower outage plus one churn CPE would
        make half of the core's customers "fail together" (scenario outage_explains_mass). So is one
        that reported dying gasp: its power, not the network (``_cause_mass``), and one below a node
        confirmed DOWN while what lies between answers (``_dark_above``: that node's incident takes it).
        """
        rc = self._counts()
        counts = {a: rc[a] for a in nodes}
        wanted = counts.keys()
        parents, ancestors, down, member = self.topo.parents, self.topo.ancestors, self.down, self.member
        causes, downk = self.cause, down.keys()
        dark = not downk.isdisjoint(self.topo.endpoints_below.keys())  # a node down at all (few nodes)
        for t in self._window():
            key = member.get(t)
            if (key is not None and key != t) or all(p in down for p in parents[t]) or (
                    causes and causes.get(t) == DYING_GASP) or (
                    dark and not downk.isdisjoint(ancestors[t]) and self._behind_dark(t)):
                for a in wanted & set(ancestors[t]):
                    counts[a] -= 1
        return counts

    def _prune_window(self) -> None:
        horizon = self.now - self.s.window
        recent, down, rc, start = self._recent, self.down, self._recent_count, self._window_from
        if horizon > start:
            self._window_from = horizon  # exactly W apart is still within W (as together.py)
        left: set[str] = set()  # (an endpoint down twice at one time has two entries, counted once)
        while recent and recent[0][0] < horizon:
            ts, e = recent.popleft()
            if ts >= start and down.get(e) == ts and e not in left:  # it was inside W (_windowed)
                left.add(e)
                for a in self.topo.ancestors[e]:
                    rc[a] -= 1

    def _fibre_cut(self, inc: Incident) -> None:
        """An outage at an answering node for the LOS failures below it: a mass incident (``was_outage``:
        one incident while K of its endpoints are down; fewer, and the rest are judged again after
        ``grace``), the ONUs reporting LOS inside W attached."""
        inc.was_outage = True
        self.changed.add(inc.id)
        self._absorb(inc, self._mass_members(inc.root, LOS))

    def _mass_members(self, node: str, cause: str | None = None) -> list[str]:
        """Endpoints below ``node`` that failed inside W (alone, or as a single), or sit in a mass incident
        further down; not those an outage holds. ``cause``: only those reporting it (and a power
        incident's further down); None: only those not reporting dying gasp (their power)."""
        out = []
        causes, down, endpoint, ancestors = self.cause, self.down, self.topo.endpoint, self.topo.ancestors
        downk = down.keys()
        dark = not downk.isdisjoint(self.topo.endpoints_below.keys())  # a node down at all (few nodes)
        below: Kind = "suspected" if cause is None else "power" if cause == DYING_GASP else "outage"
        for t in self.topo.descendants(node):
            if (
                t in down and t in endpoint and t not in self._ignored and self._topo_root(t) == t
                and (not dark or downk.isdisjoint(ancestors[t]) or not self._behind_dark(t))
            ):
                why = causes.get(t) if causes else None
                if (why != cause) if cause is not None else (why == DYING_GASP):
                    continue
                key = self.member.get(t)
                if key is None or key == t:
                    if self._windowed(t):
                        out.append(t)
                elif below != "outage" and self.basis[self.incidents[key].id] == below:
                    out.append(t)  # held by an outage: explained there, it stays
        return out

    def _upgrade(self, inc: Incident) -> None:
        """The answering node behind a mass incident went down itself: same incident, now an outage."""
        self.basis[inc.id] = "outage"
        inc.was_outage = True
        self.changed.add(inc.id)  # persisted: after a restart it must still be judged as a mass incident
        self._set_kind(inc, "planned" if inc.kind == "planned" else "outage")
        self._absorb(inc, self._down_subtree(inc.root))
