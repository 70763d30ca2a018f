"""Delivery's tables in the daemon's store: the outbox, the planner's memory, the incident -> ticket map.

Numbered migrations of their own (component ``delivery`` in ``schema_version``, see
:mod:`monitor.db`; releases before it kept them in a ``delivery_schema`` table, adopted on opening);
:mod:`monitor.delivery.outbox` reads and writes them. Released migrations are never edited.
"""

from __future__ import annotations

from monitor.db import Schema

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        incident TEXT NOT NULL,
        action TEXT NOT NULL,
        recipient TEXT NOT NULL,
        channel TEXT NOT NULL,
        grp TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        inflight INTEGER NOT NULL DEFAULT 0,
        uncertain INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_at REAL NOT NULL,
        done_at REAL,
        reason TEXT,
        error TEXT,
        result TEXT
    );
    CREATE INDEX outbox_due ON outbox (channel, status, next_at);
    CREATE INDEX outbox_grp ON outbox (grp, status, id);
    CREATE INDEX outbox_incident ON outbox (incident);
    CREATE TABLE delivery_state (
        incident TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX delivery_state_status ON delivery_state (status);
    CREATE TABLE delivery_tickets (
        incident TEXT PRIMARY KEY,
        desk TEXT NOT NULL,
        ticket TEXT NOT NULL
    );
    CREATE TABLE delivery_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the claim of due rows walks one channel's waiting rows in id order and stops at its batch (it
    # sorted every due row for each batch: a 10,000-notice fan-out took 313 claims of 10,000 rows each)
    """
    CREATE INDEX outbox_claim ON outbox (channel, status, inflight, id);
    """,
    # 3: a notice's row is updated four times (claimed, sending, handed over, delivered). On PostgreSQL an
    # update that changes no indexed column and finds room on the row's page is HOT: no index entry is
    # written. `inflight` left the claim's index (the claim reads it from the row, as next_at and grp:
    # the rows it walks past are the few in flight), so the first three updates change no indexed column,
    # and the table's pages are filled only to half by inserts, so that there is room. SQLite has no such
    # option; there the claim's index is simply no longer written by those three updates.
    """
    DROP INDEX outbox_claim;
    CREATE INDEX outbox_claim ON outbox (channel, status, id);
    -- only on postgresql
    ALTER TABLE outbox SET (fillfactor = 50);
    """,
    # 4: the three indexes on `status` hold only the rows still to send (every query through them asks for
    # status = 'pending'). Recording a row delivered (or failed) changes `status`, so it cannot be a HOT
    # update on PostgreSQL: it wrote a new entry in all six indexes; a partial index whose condition the new
    # row fails gets none, so three (the key, the id, the incident). The claim walks only pending rows.
    """
    DROP INDEX outbox_due;
    CREATE INDEX outbox_due ON outbox (channel, status, next_at) WHERE status = 'pending';
    DROP INDEX outbox_grp;
    CREATE INDEX outbox_grp ON outbox (grp, status, id) WHERE status = 'pending';
    DROP INDEX outbox_claim;
    CREATE INDEX outbox_claim ON outbox (channel, status, id) WHERE status = 'pending';
    """,
)

SCHEMA = Schema("delivery", MIGRATIONS)
