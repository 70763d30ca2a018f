"""Lossy links: a node whose own polls show loss explains the failures below it (rain fade).

Rain on a wireless backhaul does not cut it: the backhaul answers with heavy loss, and every poll
beyond it loses all its pings now and then, so towers, APs and CPEs below are confirmed down and
back again for as long as the rain lasts. Judged one by one that is dozens of singles and outages
for one physical cause. The engine instead keeps the nodes whose confirmed state is DEGRADED
*because of loss* (not latency or signal: those do not make the targets beyond them miss polls)
and attributes a failure below them to the highest such node: one ``degraded`` incident there.

These helpers are pure functions of the engine's state, kept out of ``engine.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

#: a DEGRADED reason that names packet loss (assess.py and replay write "loss 60% > 20%";
#: a target coming back degraded reads "answering again but loss ...")
_LOSS = re.compile(r"(?:^|, |but )loss \d")


def shows_loss(reason: str) -> bool:
    """Whether a DEGRADED transition's reason is packet loss (what makes targets beyond miss polls)."""
    return _LOSS.search(reason) is not None


def loss_top(ancestors: tuple[str, ...], lossy: Mapping[str, float], fading: Mapping[str, float]) -> str | None:
    """The highest node among ``ancestors`` (deepest first) whose loss explains a failure below it.

    A node explains it while its own polls show loss (``lossy``; also while it is confirmed down
    after showing loss: something below it still answering means the link still carries traffic),
    or while the grace period after its loss ended is running (``fading``: rain comes and goes, a
    link that just cleared still explains the flicker it left behind). The highest one, because loss
    adds up along the path: a backhaul at 60 % makes the tower and APs beyond it lossy too, and the
    backhaul is the cause.
    """
    top = None
    for a in ancestors:
        if a in lossy or a in fading:
            top = a
    return top


# ---------------------------------------------------------------- weak levels (issue 17)
#
# An ONU whose optical rx power drifts below the threshold (a dirty connector, a bent drop), or a station
# whose signal or CCQ falls (a misaligned CPE, a tree grown into the path), still answers: DEGRADED, not
# DOWN, and nothing the customer is told about. Its technicians are: one ``degraded`` incident per
# parent (the PON port or AP whose table lists it), with every weak endpoint below it and its values.

#: a DEGRADED reason that names a subscriber's levels (monitor.polling.table_watch.level_reasons, and
#: an endpoint's own SNMP levels: monitor.polling.assess) rather than loss, latency or jitter
_LEVELS = re.compile(r"(?:^|, |but )(?:onu rx|optical rx|signal|ccq) -?\d")
#: how the detail of a weak-levels ``degraded`` incident begins (delivery tells those apart from a
#: lossy link's by it: technicians only, never a customer notice)
LEVELS_DETAIL = "weak levels below "
#: the stored basis of a weak-levels incident (its kind is ``degraded``; a lossy link's basis is ``degraded``)
LEVELS_BASIS: Final = "levels"
MAX_LISTED = 100  # endpoints whose values one detail lists (an AP may have 200 weak stations)


def shows_levels(reason: str) -> bool:
    """Whether a DEGRADED transition's reason names optical or radio levels below a threshold."""
    return _LEVELS.search(reason) is not None


def weak_levels(detail: str) -> bool:
    """Whether an incident's detail says it is a weak-levels ``degraded`` incident."""
    return detail.startswith(LEVELS_DETAIL)


def levels_detail(parent: str, weak: Mapping[str, str], customer: Mapping[str, str]) -> str:
    """What a weak-levels incident says: each weak endpoint below ``parent``, its customer and values.

    ``weak``: endpoint -> its DEGRADED reason ("onu rx -28.5dBm < -27dBm"), listed in sorted order.
    """
    items = sorted(weak.items())
    parts = []
    for tid, why in items[:MAX_LISTED]:
        who = f" ({customer[tid]})" if tid in customer else ""
        parts.append(f"{tid}{who} {why.removeprefix('answering again but ')}")
    more = f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{LEVELS_DETAIL}{parent}: {'; '.join(parts) or 'none left'}{more}"
