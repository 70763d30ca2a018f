"""Correlation's tables in the daemon's store: incidents, their history, staff actions, maintenance.

Numbered migrations of their own (component ``correlation`` in ``schema_version``, see
:mod:`monitor.db`); :mod:`monitor.correlate.store` reads and writes them. Released migrations are
never edited: append a new one.
"""

from __future__ import annotations

from monitor.db import Schema

MIGRATIONS: tuple[str, ...] = (
    # 1 (2 in the single numbering before monitor.db): incidents, their targets and lifecycle history,
    # staff actions, maintenance windows
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        basis TEXT NOT NULL,
        root TEXT NOT NULL,
        status TEXT NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        cleared_at REAL,
        closed_at REAL,
        merged_into TEXT,
        grace_from REAL,
        clear_since REAL,
        last_update REAL NOT NULL,
        acked_at REAL,
        acked_by TEXT
    );
    CREATE INDEX incidents_status ON incidents (status, seq);
    CREATE INDEX incidents_opened ON incidents (opened_at);
    CREATE TABLE incident_targets (
        incident TEXT NOT NULL,
        target TEXT NOT NULL,
        down INTEGER NOT NULL,
        PRIMARY KEY (incident, target)
    ) WITHOUT ROWID;
    CREATE TABLE incident_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        incident TEXT NOT NULL,
        event TEXT NOT NULL,
        kind TEXT NOT NULL,
        root TEXT NOT NULL,
        affected_endpoints TEXT NOT NULL,
        affected_customers TEXT NOT NULL,
        affected_nodes TEXT NOT NULL,
        into_incident TEXT
    );
    CREATE INDEX incident_events_incident ON incident_events (incident, id);
    CREATE INDEX incident_events_ts ON incident_events (ts);
    CREATE TABLE incident_actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident TEXT NOT NULL,
        ts REAL NOT NULL,
        action TEXT NOT NULL,
        author TEXT NOT NULL,
        text TEXT NOT NULL,
        done_at REAL
    );
    CREATE INDEX incident_actions_incident ON incident_actions (incident, id);
    CREATE TABLE maintenance (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        reason TEXT NOT NULL,
        author TEXT NOT NULL,
        customers TEXT NOT NULL,
        created_at REAL NOT NULL,
        removed_at REAL
    );
    CREATE TABLE maintenance_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        window_id INTEGER NOT NULL,
        node TEXT NOT NULL,
        ts REAL NOT NULL,
        event TEXT NOT NULL
    );
    CREATE TABLE correlation_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2 (4 before monitor.db): a suspected incident whose node then went down itself (now an outage, same
    # id) stays a mass incident while K endpoints are down after the node is back; the engine must know
    # that on resume
    """
    ALTER TABLE incidents ADD COLUMN was_outage INTEGER NOT NULL DEFAULT 0;
    """,
    # 3 (5 before monitor.db): since when an incident's affected set changed without an update announcing
    # it yet (updates gather for update_interval; a restart in between must neither lose nor delay it)
    """
    ALTER TABLE incidents ADD COLUMN pending_since REAL;
    """,
)

SCHEMA = Schema("correlation", MIGRATIONS)
