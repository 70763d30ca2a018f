"""Pure planning of the technicians' alert for a zone the core cannot see (issue 14).

A zone whose remote pollers are all silent is blind (:mod:`monitor.remote.silence`): its targets are
unknown, no outage opens, no customer hears a word. The technician on call for the zone (tier 0 of
the rota of its topmost node's municipality) gets one alert per episode, and one recovery when a
poller of the zone is heard again: e-mail, Apprise and the technicians' MQTT topic
(``<prefix>/technicians/<municipality>``, where the incidents' technician alerts go, for a technician
with ``mqtt: true``), like an incident's alert, with no ack link, no escalation, no ticket, no
retained MQTT status (the zone's state is unknown, not down).

Level-triggered, so it holds across a core restart and an outbox that refused a write: each second
the daemon hands over what it sees (:class:`~monitor.remote.silence.Sight`) and :func:`plan` compares
it with ``GlobalMemory.zones`` (zone -> when its alerted blindness began), which the service stores
in the same transaction as the rows. A zone blind and not in the memory is alerted and remembered; a
remembered zone seen again (or gone from the config) gets its recovery and is forgotten. A core that
restarts while the zone is still blind finds it remembered and alerts nobody again; one that
restarts after the poller came back sees the poller and sends the recovery. Keys derive from the
zone and the episode's start, so planning twice is harmless.
"""

from __future__ import annotations

from typing import Any

from monitor.delivery.planner import Context, GlobalMemory, Item
from monitor.remote.silence import Sight, ZoneNews

BLIND, BACK = "technician_zone_blind", "technician_zone_back"


def episode(zone: str, since: float) -> str:
    """The episode's reference: the outbox rows' incident and the alert's subject tag."""
    return f"ZONE-{zone}-{int(since)}"


def plan(sight: Sight, glob: GlobalMemory, ctx: Context, now: float) -> list[Item]:
    """Items for the zones whose blindness began or ended since the memory was written; ``glob.zones``
    moves on with them (the caller stores it with the rows)."""
    items: list[Item] = []
    for zone, news in sorted(sight.blind.items()):
        if zone not in glob.zones:
            glob.zones[zone] = news.at
            items += _tell(zone, news, news.at, BLIND, ctx, now)
    for zone, since in sorted(glob.zones.items()):
        if zone in sight.seen or zone not in sight.zones:
            del glob.zones[zone]
            items += _tell(zone, None, since, BACK, ctx, now)
    return items


def _tell(zone: str, news: ZoneNews | None, since: float, template: str, ctx: Context, now: float) -> list[Item]:
    targets = sorted(t for t, z in (ctx.inv.pollers.zone_of.items() if ctx.inv.pollers else ()) if z == zone)
    root = _topmost(targets, ctx)
    tiers = ctx.oncall(root, since) if root else ()
    tech = ctx.cfg.technicians.get(tiers[0]) if tiers else None
    if tech is None:
        return []
    munis = sorted({ctx.place(t)["municipality_name"] for t in targets if ctx.inv.targets[t].role == "node"})
    ref = episode(zone, since)
    data: dict[str, Any] = {
        **ctx.place(root), "incident": ref, "kind": "blind", "zone": zone, "technician": tech.id,
        "technician_name": tech.name, "since": ctx.local(since), "ts": ctx.local(now),
        "duration_min": max(0, int((now - since) // 60)), "targets": len(targets),
        "municipalities": ", ".join(munis), "timezone": ctx.cfg.timezone,
        "pollers": ", ".join(news.pollers) if news else "",
        "last_heard": ctx.local(news.last_heard) if news else "",
    }
    action = "zone_blind" if template == BLIND else "zone_back"
    out = []
    if tech.email and ctx.cfg.email:
        out.append(Item(ref, action, tech.email, 1, "email", template, tech.language, {**data, "to": tech.email}))
    for i in range(len(tech.apprise)):
        dest = f"{tech.id}#{i + 1}"
        out.append(Item(ref, action + "_apprise", dest, 1, "apprise", template, tech.language, {**data, "to": dest}))
    if tech.mqtt and ctx.cfg.mqtt is not None:
        topic = f"{ctx.cfg.mqtt.prefix}/technicians/{data['municipality'] or 'unknown'}"
        payload = {"incident": ref, "kind": "blind", "event": action, "zone": zone, "node": root,
                   "site": data["site"], "municipality": data["municipality"], "technician": tech.id, "tier": 0,
                   "since": data["since"], "targets": len(targets), "pollers": data["pollers"],
                   "last_heard": data["last_heard"]}
        out.append(Item(ref, action + "_mqtt", tech.id, 1, "mqtt", "", tech.language,
                        {"topic": topic, "payload": payload, "retain": False}, group="mqtt"))
    return out


def _topmost(targets: list[str], ctx: Context) -> str:
    """The zone's node nearest the core (whose parent is outside the zone): whose rota and place the
    alert takes; "" for an empty zone."""
    inside = set(targets)
    nodes = [t for t in targets if ctx.inv.targets[t].role == "node"] or targets
    tops = [t for t in nodes if not (set(ctx.inv.targets[t].parents) & inside)]
    return (tops or nodes or [""])[0]
