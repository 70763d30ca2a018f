"""Endpoints judged afresh that failed together: still one mass failure, not a single each.

When an incident stops explaining endpoints that are still down (its grace period ended, a lossy
link's incident ended, a blindness ended), the engine judges them again. Judged one by one, long
after they failed, they no longer fall inside the mass-outage window W of *now*, so each became a
``single``: after a blindness the still-dark customers of a whole tower turned into dozens of
singles (issue 19). What matters is that they failed together: K of them, and P % of the endpoints
below a node that answers, confirmed down within W of each other. This module finds those groups;
pure, deterministic (ties broken by inventory order), cost O(n · depth) for n endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def failed_together(
    endpoints: Sequence[str],
    since: Mapping[str, float],
    ancestors: Mapping[str, tuple[str, ...]],
    answers: Callable[[str], bool],
    below: Mapping[str, int],
    *,
    k: int,
    share: float,
    window: float,
) -> list[tuple[str, list[str]]]:
    """Groups ``(node, endpoints)`` meeting the mass rule among ``endpoints`` (in the given order).

    For each endpoint in turn: the deepest answering node above it where the largest run of the
    candidates below it failing within ``window`` of each other meets K and P, raised to a higher
    node only if that explains more of them (the engine's rule 4). Each endpoint is in one group.
    """
    candidates: dict[str, list[str]] = {}
    for t in endpoints:
        for a in ancestors[t]:
            if answers(a):
                candidates.setdefault(a, []).append(t)
    taken: set[str] = set()
    out: list[tuple[str, list[str]]] = []
    for t in endpoints:
        if t in taken:
            continue
        best: tuple[str, list[str]] | None = None
        for a in ancestors[t]:  # deepest first
            if a not in candidates:
                continue
            run = _densest([e for e in candidates[a] if e not in taken], since, window)
            if t not in run or len(run) < k or len(run) * 100.0 < share * below[a]:
                continue
            if best is None or len(run) > len(best[1]):
                best = (a, run)
        if best is not None:
            taken.update(best[1])
            out.append(best)
    return out


def _densest(eps: list[str], since: Mapping[str, float], window: float) -> list[str]:
    """The most endpoints whose down times fall within ``window`` of each other (earliest such run)."""
    order = sorted(eps, key=lambda e: since[e])
    best_lo, best_n, lo = 0, 0, 0
    for hi, e in enumerate(order):
        while since[e] - since[order[lo]] > window:
            lo += 1
        if hi - lo + 1 > best_n:
            best_lo, best_n = lo, hi - lo + 1
    return order[best_lo:best_lo + best_n]
