"""Maintenance windows in the correlation engine (rule 9): a failure rooted inside an active
window is ``planned``; when the window ends, one still failing is a real alarm and what is left of
an ended one is judged afresh (the windows themselves: ``maintenance.py``)."""

from __future__ import annotations

from collections.abc import Iterable

from monitor.correlate.maintenance import Window, WindowEvent
from monitor.correlate.recovery import Recovery


class Maintenance(Recovery):
    """Which windows are active, which nodes they cover, and their start and end."""

    def set_windows(self, windows: Iterable[Window]) -> None:
        """Replace the maintenance windows (from config, CLI or store); takes effect at the next tick."""
        self._era += 1  # (Engine._settled: what a settled failure is may change)
        self._windows = sorted(windows, key=lambda w: (w.start, w.id))
        for wid in sorted(set(self._active) - {w.id for w in self._windows}):
            self._end_window(self._active[wid])
        self._sync_windows()

    def _next_window_change(self) -> float | None:
        best: float | None = None
        for w in self._windows:
            edge = w.end if w.id in self._active else w.start
            if (w.id in self._active or w.end > self.now) and (best is None or edge < best):
                best = edge
        return best

    def _sync_windows(self) -> None:
        for w in self._windows:
            if w.id in self._active:
                if w.end <= self.now:
                    self._end_window(w)
            elif w.start <= self.now < w.end:
                self._active[w.id] = w
                self._covered[w.node] = self._covered.get(w.node, 0) + 1
                self.window_events.append(WindowEvent(max(w.start, self.now), w.id, w.node, "started"))

    def _end_window(self, w: Window) -> None:
        del self._active[w.id]
        n = self._covered[w.node] - 1
        if n:
            self._covered[w.node] = n
        else:
            del self._covered[w.node]
        self.window_events.append(WindowEvent(self.now, w.id, w.node, "ended"))
        for inc in sorted(self.by_id.values(), key=lambda i: i.seq):
            if inc.kind != "planned" or inc.id not in self.by_id or self._is_covered(inc.root):
                continue
            if not self._grace_due(inc) and (inc.members or inc.root in self.down):
                self._set_kind(inc, self.basis[inc.id])  # still failing after the window: a real alarm
            elif inc.members:
                self._grace_expired(inc)  # the planned failure is over: what is still down is judged afresh
            # else: all over, it resolves as planned after its hold-down (no alarm)

    def _is_covered(self, tid: str) -> bool:
        cov = self._covered
        if not cov:
            return False
        if tid in cov:
            return True
        return any(a in cov for a in self.topo.ancestors.get(tid, ()))
