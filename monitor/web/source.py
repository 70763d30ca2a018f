"""Reads for the status page: the store's rows behind a snapshot, and a cheap change signature.

One short read every second tells whether anything changed (a new lifecycle event, staff action or
maintenance edit); only then are the open incidents read again, so a quiet network costs one query.
"""

from __future__ import annotations

from monitor.correlate.store import IncidentStore
from monitor.db import ERRORS, Where
from monitor.errors import StorageError
from monitor.web.snapshot import StoreRows

RESOLVED_LIMIT = 200  # the newest resolved incidents looked at for "resolved in the last 24 h"
OPEN_LIMIT = 10_000


class StatusSource:
    def __init__(self, db_path: Where) -> None:
        self.store = IncidentStore(db_path)

    def close(self) -> None:
        self.store.close()

    def signature(self) -> tuple[object, ...]:
        return self.store.revision()

    def rows(self) -> StoreRows:
        s = self.store
        try:
            open_ = s.incidents(status="open", limit=OPEN_LIMIT)
            resolved = s.incidents(status="resolved", limit=RESOLVED_LIMIT)
            wanted = [r.id for r in (*open_, *resolved)]
            events = {i: list(s.events(i)) for i in wanted}
            actions = {i: s.actions(i) for i in wanted}
            windows = s.maintenance()
        except ERRORS as exc:
            raise StorageError(f"status page: cannot read the store: {exc}") from exc
        return StoreRows(open_, resolved, events, actions, windows)

