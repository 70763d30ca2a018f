"""Each remote poller's view, kept across a core restart: ``<state_dir>/remote-views.json``.

After a restart the core assumes every poller sees what it last concluded (the stored states,
:class:`~monitor.remote.vantage.Vantages`' seed). Where a poller saw otherwise (the NOC poller
sees a tower down that the town poller still reaches: up), that guess would stand until the
poller's next change of that target, which may never come: the town poller's report of the tower
failing would then be outvoted by a NOC view of "up" that is not true, and an outage missed. So
the views that differ from the effective state (few: :meth:`Vantages.differences`) are written
here, at most once a second while they change, and put back at start. Written whole to a
temporary file and renamed, so a crash leaves the previous version: at most a second of views is
lost, for the targets that changed in it. Read as untrusted (bounded, typed); an unreadable file
is logged and ignored (the seed alone, as before the file existed).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from monitor import jsonbound
from monitor.state import State

VIEWS_FILE = "remote-views.json"
MAX_BYTES = 64 << 20  # 4 pollers x 100,000 differing views is ~20 MB
VERSION = 1
_STATES = {s.value: s for s in State}
Views = dict[str, dict[str, tuple[State, float]]]  # poller -> target -> (state, since)


def load(path: Path) -> Views:
    """The views kept in ``path`` ({} without a file); ValueError (or OSError) for anything else."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
    except FileNotFoundError:
        return {}
    try:
        raw = jsonbound.loads(path.read_text(encoding="utf-8"))
    except jsonbound.TooDeep:
        raise ValueError("nested too deep") from None
    if not isinstance(raw, dict) or raw.get("v") != VERSION or not isinstance(raw.get("views"), dict):
        raise ValueError(f"expected {{\"v\": {VERSION}, \"views\": {{...}}}}")
    out: Views = {}
    for poller, views in raw["views"].items():
        if not isinstance(views, dict):
            raise ValueError(f"views of {poller[:40]!r} are not an object")
        mine = out[poller] = {}
        for target, pair in views.items():
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0] in _STATES
                    and type(pair[1]) in (int, float) and math.isfinite(pair[1])):
                raise ValueError(f"view of {poller[:40]!r} on {target[:40]!r} is not [state, since]")
            mine[target] = (_STATES[pair[0]], float(pair[1]))
    return out


def save(path: Path, views: Views) -> None:
    """Write ``views`` whole (a temporary file, then renamed); OSError if it cannot."""
    body = {"v": VERSION, "views": {p: {t: [s.value, since] for t, (s, since) in vs.items()}
                                    for p, vs in views.items()}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, separators=(",", ":"), allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
