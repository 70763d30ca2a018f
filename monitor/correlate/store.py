"""Incident persistence in the daemon's store (tables: :mod:`monitor.correlate.schema`).

Everything one engine step produced (lifecycle events, incident rows, who is attached to which
incident) is written in ONE transaction, so a ``kill -9`` at any point leaves either all of a step
or none of it; the service then resumes open incidents from exactly what was announced.

Also the small API behind ``monitor incidents`` and ``monitor maintenance``: staff actions are
queued rows (``incident_actions``) that the running daemon picks up, so the CLI never has to reach
into the daemon's memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.correlate.degraded import LEVELS_BASIS, weak_levels
from monitor.correlate.engine_state import ADD, DROP, LEFT_DOWN, RECOVERED, MemberOp
from monitor.correlate.incidents import Basis, Incident, IncidentEvent, parse_ts
from monitor.correlate.maintenance import Window, WindowEvent
from monitor.db import (
    ERRORS,
    OPEN_TIMEOUT,
    InDoubt,
    SQLite,
    StoreConnection,
    Where,
    committed,
    engine_for,
    open_store,
)
from monitor.db import transaction as _tx
from monitor.errors import MonitorError, StorageError
from monitor.state import State
from monitor.store import components

ACTIONS = ("ack", "note", "resolve", "eta")  # eta: text is the ISO restoration estimate, or ETA_WITHDRAWN
#: text of an ``eta`` action that withdraws the estimate (readable as is in ``incidents show``)
ETA_WITHDRAWN = "withdrawn"


class NotFound(MonitorError):
    """No incident or maintenance window with that id."""


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: str
    kind: str
    root: str
    status: str  # open | resolved | merged
    opened_at: float
    updated_at: float
    cleared_at: float | None
    closed_at: float | None
    merged_into: str | None
    acked_at: float | None
    acked_by: str | None
    affected_endpoints: int  # open: affected now; resolved or merged: ever affected
    affected_customers: int
    upgraded: bool = False  # opened as suspected, then its node went down: now an outage, same id
    #: a ``degraded`` incident for weak levels below a PON port or AP (basis ``levels``): technicians only
    levels: bool = False


@dataclass(frozen=True, slots=True)
class MaintenanceRow:
    id: int
    node: str
    start: float
    end: float
    reason: str
    author: str
    customers: tuple[str, ...]
    created_at: float
    removed_at: float | None


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One staff (or engine) action on an incident, in the order it was recorded."""

    id: int
    incident: str
    ts: float
    action: str
    author: str
    text: str


class IncidentStore:
    """Incidents, their history, staff actions and maintenance windows, next to the state-change log."""

    def __init__(self, where: Where, busy_timeout: float = 5.0) -> None:
        """``where``: the SQLite file, or another engine (``store:`` in the config). ``busy_timeout``: how
        long a write waits for another connection's lock (the daemon's is short, since the wait blocks its
        event loop; see :class:`monitor.correlate.service.CorrelationService`)."""
        engine = engine_for(where)
        self.path = engine.describe()
        self.db: StoreConnection = open_store(engine, components(), what="the incident store",
                                              busy_timeout=busy_timeout, migrate_timeout=OPEN_TIMEOUT)
        # attaching targets: SQLite keeps its INSERT OR REPLACE (a third faster than the upsert on an
        # outage's 100k rows); other engines upsert, each target once per statement
        self._embedded = isinstance(engine, SQLite)
        self._row_ops, self._bulk_ops = (_ROW_SQL_OPS, _BULK_SQL) if self._embedded else (_UPSERT_ROW, _UPSERT_BULK)
        #: a step whose COMMIT went unanswered and could not be settled at once: its appended rows
        self._doubt: tuple[InDoubt, frozenset[IncidentEvent], frozenset[WindowEvent]] | None = None
        #: what steps found committed after their answer was lost appended: left out of every save until
        #: one succeeds (the service saves them again with each step until then)
        self._recorded: tuple[frozenset[IncidentEvent], frozenset[WindowEvent]] = (frozenset(), frozenset())

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ engine persistence

    def save(
        self,
        events: Sequence[IncidentEvent],
        open_incidents: dict[str, tuple[Incident, Basis]],
        changed: set[str],
        member_log: Sequence[MemberOp],
        window_events: Sequence[WindowEvent] = (),
        done_actions: Sequence[int] = (),
        now: float = 0.0,
        blind_ended: Sequence[tuple[str, float]] = (),
        late: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        """One engine step, atomically: events, incident rows, attached targets, window events, actions done,
        blindnesses ended (``cleared_at``: the end of the period reports exclude), and the late DOWNs
        (``late``, when they changed: :meth:`late_downs`).

        ``open_incidents`` may hold a blind incident whose alert staff resolved while the blindness
        goes on: its row stays resolved, only its timer (``clear_since``) is kept for a restart.
        """
        if self._doubt is not None:  # (the service saves a failed step again with its next one)
            self._settle()
        done_events, done_windows = self._recorded
        if done_events or done_windows:
            events = [e for e in events if e not in done_events]
            window_events = [w for w in window_events if w not in done_windows]
        if not (events or changed or member_log or window_events or done_actions or blind_ended or late is not None):
            self._recorded = (frozenset(), frozenset())
            return
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for e in events:
                    self._event(e, open_incidents)
                for inc_id in sorted(changed):
                    if inc_id in open_incidents:
                        inc, basis = open_incidents[inc_id]
                        self._upsert(inc, basis)
                self._members(member_log)
                db.executemany(
                    "INSERT INTO maintenance_events (window_id, node, ts, event) VALUES (?, ?, ?, ?)",
                    [(w.window, w.node, w.ts, w.event) for w in window_events],
                )
                db.executemany("UPDATE incident_actions SET done_at = ? WHERE id = ?", [(now, i) for i in done_actions])
                db.executemany("UPDATE incidents SET cleared_at = ? WHERE id = ?", [(ts, i) for i, ts in blind_ended])
                if late is not None:
                    db.execute("INSERT INTO correlation_meta (key, value) VALUES ('late', ?) ON CONFLICT(key)"
                               " DO UPDATE SET value = excluded.value",
                               (json.dumps({t: list(v) for t, v in sorted(late.items())}, separators=(",", ":")),))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except InDoubt as exc:
            self._doubt = (exc, frozenset(events), frozenset(window_events))
            raise StorageError(f"cannot record incidents in {self.path}: {exc}") from exc
        except ERRORS as exc:
            raise StorageError(f"cannot record incidents in {self.path}: {exc}") from exc
        self._recorded = (frozenset(), frozenset())

    def _settle(self) -> None:
        """Ask whether the step in doubt was committed; if it was, its appended rows (events, their notes,
        window events) are left out from now on. The rest of a step (upserts, attachments in order,
        updates) lands the same written twice."""
        assert self._doubt is not None
        doubt, done_events, done_windows = self._doubt
        try:
            done = committed(self.db, doubt)
        except ERRORS as exc:
            raise StorageError(f"cannot record incidents in {self.path}: {exc}") from exc
        self._doubt = None
        if done:
            self._recorded = (self._recorded[0] | done_events, self._recorded[1] | done_windows)

    def _event(self, e: IncidentEvent, open_incidents: dict[str, tuple[Incident, Basis]]) -> None:
        db = self.db
        db.execute(
            "INSERT INTO incident_events (ts, incident, event, kind, root, affected_endpoints, affected_customers,"
            " affected_nodes, into_incident) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.ts, e.incident, e.event, e.kind, e.root, json.dumps(e.affected_endpoints),
             json.dumps(e.affected_customers), json.dumps(e.affected_nodes), e.into),
        )
        if e.detail:  # why it opened (a burst's learned rate and odds): a note `monitor incidents show` lists
            db.execute(
                "INSERT INTO incident_actions (incident, ts, action, author, text, done_at) VALUES (?, ?, ?, ?, ?, ?)",
                (e.incident, e.ts, "note", "correlation", e.detail, e.ts),
            )
        if e.event == "opened":
            inc_basis = open_incidents.get(e.incident)
            seq = int(e.incident.rsplit("-", 1)[1])
            db.execute(
                "INSERT INTO incidents"
                " (id, seq, kind, basis, root, status, opened_at, updated_at, last_update)"
                " VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?) ON CONFLICT DO NOTHING",
                (e.incident, seq, e.kind, inc_basis[1] if inc_basis else _basis_of(e), e.root, e.ts, e.ts, e.ts),
            )
        elif e.event == "updated":
            db.execute("UPDATE incidents SET kind = ?, updated_at = ? WHERE id = ?", (e.kind, e.ts, e.incident))
        else:
            status = "merged" if e.event == "merged" else "resolved"
            db.execute(
                "UPDATE incidents SET status = ?, kind = ?, updated_at = ?, closed_at = ?, merged_into = ?,"
                # a blind row's cleared_at is the end of the blindness (the period reports exclude),
                # written when it ends (save(blind_ended)): later than this if staff resolved the alert
                " cleared_at = CASE WHEN basis = 'blind' THEN NULL ELSE COALESCE(clear_since, ?) END WHERE id = ?",
                (status, e.kind, e.ts, e.ts, e.into, e.ts, e.incident),
            )

    def _upsert(self, inc: Incident, basis: Basis) -> None:
        self.db.execute(
            "INSERT INTO incidents (id, seq, kind, basis, root, status, opened_at, updated_at, grace_from,"
            " clear_since, last_update, was_outage, pending_since) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, basis = excluded.basis,"
            " grace_from = excluded.grace_from, clear_since = excluded.clear_since,"
            " last_update = excluded.last_update, was_outage = excluded.was_outage,"
            " pending_since = excluded.pending_since"
            " WHERE incidents.status = 'open' OR (incidents.basis = 'blind' AND incidents.cleared_at IS NULL)",
            (inc.id, inc.seq, inc.kind, basis, inc.root, inc.opened_at, inc.opened_at, inc.grace_from,
             inc.clear_since, inc.last_update, int(inc.was_outage), inc.pending_since),
        )

    def _members(self, log: Sequence[MemberOp]) -> None:
        """Apply the engine's attach log in order, batching runs of the same operation.

        A run for one incident (an outage taking 100k targets) goes in as ONE statement over a
        JSON array, so SQLite walks the rows in C instead of binding each from Python (half the
        cost; PostgreSQL's ``json_array_elements_text``, one round trip). Order inside a run does not
        matter: repeating an operation on a row is idempotent.
        """
        i = 0
        while i < len(log):
            inc, target, op = log[i]
            if not isinstance(target, str):  # a run the engine logged as one entry
                self.db.execute(self._bulk_ops[op], (inc, self._json_run(target)))
                i += 1
                continue
            run = [target]
            i += 1
            while i < len(log) and log[i][2] == op and log[i][0] == inc and isinstance(t := log[i][1], str):
                run.append(t)
                i += 1
            if len(run) >= _BULK:
                self.db.execute(self._bulk_ops[op], (inc, self._json_run(run)))
            else:
                self.db.executemany(self._row_ops[op], [(inc, t) for t in run])

    def _json_run(self, targets: Sequence[str]) -> str:
        """A run of targets as the JSON array of one bulk statement; each once outside SQLite (an upsert
        may not touch a row twice in one statement on PostgreSQL)."""
        return json.dumps(targets if self._embedded else list(dict.fromkeys(targets)))

    # ------------------------------------------------------------ restart

    def load_open(self) -> list[tuple[Incident, Basis, set[str]]]:
        """Open incidents as the engine left them, with what was last announced (``emitted``)."""
        rows = self.db.execute(_LOAD_SQL + " WHERE status = 'open' ORDER BY seq").fetchall()
        out = []
        for row in rows:
            inc, iid, basis = _incident(row), row[0], row[3]
            last = self._announced(iid)
            if last is not None:
                inc.emitted = (tuple(json.loads(last[0])), tuple(json.loads(last[1])))
            ever: set[str] = set()
            for target, down in self.db.execute(
                "SELECT target, down FROM incident_targets WHERE incident = ?", (iid,)
            ):
                ever.add(target)
                if down:
                    inc.members.add(target)
            out.append((inc, basis, ever))
        return out

    def closed_blind(self) -> Incident | None:
        """A blindness whose alert staff resolved while it went on (resolved, not ended: ``cleared_at``
        still NULL), so a restart neither forgets it nor opens a second blind alert."""
        row = self.db.execute(
            _LOAD_SQL + " WHERE status != 'open' AND basis = 'blind' AND cleared_at IS NULL ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _incident(row)

    def blind_ended_since(self, since: float) -> float | None:
        """When the last blindness ended, if at or after ``since`` (what is still down then waits out
        its grace after a restart too, see ``Engine.restore``)."""
        row = self.db.execute(
            "SELECT MAX(cleared_at) FROM incidents WHERE basis = 'blind' AND cleared_at >= ?", (since,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def left_down(self) -> dict[str, tuple[str, float]]:
        """Targets still down when staff resolved their incident (``down = 2``) -> (that incident, when
        it was resolved), the latest such incident per target."""
        rows = self.db.execute(  # the latest last: a later row of a target replaces an earlier one
            "SELECT t.target, t.incident, i.closed_at FROM incident_targets t"
            " JOIN incidents i ON i.id = t.incident WHERE t.down = 2 AND i.closed_at IS NOT NULL"
            " ORDER BY i.closed_at, i.seq"
        )
        return {t: (inc, float(at)) for t, inc, at in rows}

    def next_seq(self) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM incidents").fetchone()
        return int(row[0] or 0) + 1

    def down_states(self) -> dict[str, float]:
        """Targets the state-change log says are down now (written by the daemon's EventStore)."""
        rows = self.db.execute("SELECT target, since FROM target_state WHERE state = ?", (State.DOWN.value,))
        return {t: since for t, since in rows}

    def down_causes(self) -> dict[str, str]:
        """Per target down now, the cause its DOWN carried (a subscriber table's dying_gasp, los, ...),
        where it had one: the engine tells a power cut from a fibre cut by it, also after a restart."""
        rows = self.db.execute(
            "SELECT s.target, s.cause FROM target_state t JOIN state_changes s"
            " ON s.target = t.target AND s.ts = t.since AND s.new = t.state"
            " WHERE t.state = ? AND s.cause IS NOT NULL ORDER BY s.id",
            (State.DOWN.value,),
        )
        return {t: str(cause) for t, cause in rows}

    def down_among(self, targets: Sequence[str]) -> set[str]:
        """Which of ``targets`` the state-change log says are down now (delivery tells a customer
        "restored" only when every endpoint of theirs answers)."""
        out: set[str] = set()
        for i in range(0, len(targets), 500):
            chunk = list(targets[i:i + 500])
            rows = self.db.execute(
                f"SELECT target FROM target_state WHERE state = ? AND target IN ({','.join('?' * len(chunk))})",
                (State.DOWN.value, *chunk),
            )
            out.update(t for (t,) in rows)
        return out

    def degraded_states(self) -> set[str]:
        """Targets the state-change log says are DEGRADED now (answering beyond a threshold)."""
        rows = self.db.execute("SELECT target FROM target_state WHERE state = ?", (State.DEGRADED.value,))
        return {t for (t,) in rows}

    def degraded_reasons(self) -> dict[str, tuple[float, str]]:
        """Per target DEGRADED now: since when and why (the reason of its change into DEGRADED), so a
        restart knows which endpoints are weak by their levels and with which values (``WeakLevels``)."""
        rows = self.db.execute(
            "SELECT s.target, s.ts, s.reason FROM target_state t JOIN state_changes s"
            " ON s.target = t.target AND s.ts = t.since AND s.new = t.state WHERE t.state = ? ORDER BY s.id",
            (State.DEGRADED.value,),
        )
        return {t: (float(ts), str(reason)) for t, ts, reason in rows}

    def came_back(self, since: float) -> dict[str, float]:
        """Targets that came back (left DOWN) at or after ``since``, with the last such time: the grace
        of an open incident's members counts from their own parent's return (``Engine.restore``)."""
        rows = self.db.execute(
            "SELECT target, MAX(ts) FROM state_changes WHERE ts >= ? AND old = ? GROUP BY target",
            (since, State.DOWN.value),
        )
        return {t: ts for t, ts in rows}

    def single_history(self, since: float) -> list[tuple[float, str]]:
        """(opened_at, endpoint) of every resolved ``single`` incident opened since then: the independent
        failures the burst rule learns its rates from (``Engine.rates``, as the engine adds them)."""
        rows = self.db.execute(
            "SELECT opened_at, root FROM incidents WHERE kind = 'single' AND status = 'resolved' AND opened_at >= ?"
            " ORDER BY opened_at, seq",
            (since,),
        )
        return [(float(ts), str(root)) for ts, root in rows]

    def late_downs(self) -> dict[str, tuple[float, float]]:
        """Down targets whose DOWN reached correlation after its settle period would have ended (a remote
        poller's spool): target -> (when it arrived, when it really went down), as the engine keeps them
        (``EngineState.late``). A restart between a late batch's arrival and its judgement resumes the
        settle from the arrival and opens the incident at the real start, as without the restart.
        An unreadable value is no late news (the incident then opens when judged, as before)."""
        row = self.db.execute("SELECT value FROM correlation_meta WHERE key = 'late'").fetchone()
        if row is None:
            return {}
        try:
            raw = json.loads(row[0])
            out = {str(t): (float(v[0]), float(v[1])) for t, v in raw.items()}
        except (ValueError, TypeError, AttributeError, IndexError, KeyError):
            return {}
        return {t: v for t, v in out.items() if all(map(math.isfinite, v))}

    def observed_since(self, now: float) -> float:
        """When correlation first ran on this store (recorded now if never): the burst rule's rates are
        per time observed, and a restart must not start that over."""
        row = self.db.execute("SELECT value FROM correlation_meta WHERE key = 'observed_since'").fetchone()
        if row is not None:
            return float(row[0])
        try:
            self.db.execute("INSERT INTO correlation_meta (key, value) VALUES ('observed_since', ?)", (repr(now),))
        except ERRORS as exc:
            raise StorageError(f"{self.path}: cannot record when correlation started: {exc}") from exc
        return now

    def last_answers(self, nodes: Sequence[str]) -> dict[str, tuple[float, str]]:
        """Per node now DEGRADED or DOWN: (ts, reason) of its latest transition to an answering state.

        What the engine needs to resume which links were showing loss (``Engine.restore_loss``):
        a node that went down after answering with loss still explains the failures below it.
        """
        out: dict[str, tuple[float, str]] = {}
        states = (State.DEGRADED.value, State.DOWN.value)
        for i in range(0, len(nodes), 500):
            chunk = list(nodes[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT target FROM target_state WHERE state IN (?, ?) AND target IN ({marks})", (*states, *chunk)
            ).fetchall()
            for (t,) in rows:
                r = self.db.execute(
                    "SELECT ts, reason FROM state_changes WHERE target = ? AND new != ? ORDER BY id DESC LIMIT 1",
                    (t, State.DOWN.value),
                ).fetchone()
                if r is not None:
                    out[t] = (r[0], r[1])
        return out

    # ------------------------------------------------------------ queries (CLI, reports, delivery)

    def incidents(self, *, status: str | None = "open", limit: int = 100) -> list[IncidentRow]:
        sql = _ROW_SQL
        args: list[Any] = []
        if status is not None:
            sql += " WHERE i.status = ?"
            args.append(status)
        sql += " ORDER BY i.seq DESC LIMIT ?"
        args.append(limit)
        return [self._row(r) for r in self.db.execute(sql, args)]

    def incident(self, inc_id: str) -> IncidentRow:
        r = self.db.execute(_ROW_SQL + " WHERE i.id = ?", (inc_id,)).fetchone()
        if r is None:
            raise NotFound(f"no incident {inc_id}")
        return self._row(r)

    def _announced(self, inc_id: str) -> tuple[str, str] | None:
        """The affected lists (JSON) of the incident's last opened/updated event."""
        row = self.db.execute(
            "SELECT affected_endpoints, affected_customers FROM incident_events WHERE incident = ?"
            " AND event IN ('opened', 'updated') ORDER BY id DESC LIMIT 1",
            (inc_id,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def _ever_affected(self, inc_id: str) -> tuple[int, int]:
        """How many endpoints and customers the incident affected at any time (a resolved one's last
        update often lists nobody: they came back one by one before it ended)."""
        eps: set[str] = set()
        custs: set[str] = set()
        for e, c in self.db.execute(
            "SELECT affected_endpoints, affected_customers FROM incident_events WHERE incident = ?"
            " AND event IN ('opened', 'updated')", (inc_id,),
        ):
            eps.update(json.loads(e))
            custs.update(json.loads(c))
        return len(eps), len(custs)

    def _row(self, r: tuple[Any, ...]) -> IncidentRow:
        if r[3] != "open":  # who *was* affected; an open incident shows who is affected now
            eps, custs = self._ever_affected(r[0])
        else:
            last = self._announced(r[0])
            eps, custs = (len(json.loads(last[0])), len(json.loads(last[1]))) if last else (0, 0)
        return IncidentRow(
            id=r[0], kind=r[1], root=r[2], status=r[3], opened_at=r[4], updated_at=r[5], cleared_at=r[6],
            closed_at=r[7], merged_into=r[8], acked_at=r[9], acked_by=r[10],
            affected_endpoints=eps, affected_customers=custs, upgraded=bool(r[11]), levels=r[12] == LEVELS_BASIS,
        )

    def lifecycle(self, *, after_id: int = 0, since: float | None = None) -> list[tuple[int, IncidentEvent]]:
        """Persisted lifecycle events as the engine emitted them, with their row ids, oldest first.

        For consumers that must catch up after a crash (delivery from its cursor, board annotations
        of the last hour): one reader of this table instead of one per consumer.
        """
        sql = ("SELECT id, ts, event, incident, kind, root, affected_endpoints, affected_customers, affected_nodes,"
               " into_incident FROM incident_events WHERE id > ?")
        args: list[Any] = [after_id]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        return [
            (rid, IncidentEvent(ts, ev, inc, kind, root, tuple(json.loads(eps)), tuple(json.loads(cs)),
                                tuple(json.loads(ns)), into))
            for rid, ts, ev, inc, kind, root, eps, cs, ns, into in self.db.execute(sql + " ORDER BY id", args)
        ]

    def revision(self) -> tuple[object, ...]:
        """Changes whenever an incident, a staff action or a maintenance window changes (one short read:
        the status page and the board's live stream look every second, and re-read only on a change)."""
        try:
            row = self.db.execute(
                "SELECT (SELECT MAX(id) FROM incident_events), (SELECT MAX(id) FROM incident_actions),"
                " (SELECT COUNT(*) FROM incident_actions WHERE done_at IS NULL),"
                " (SELECT value FROM correlation_meta WHERE key = 'maintenance_rev'),"
                " (SELECT COUNT(*) FROM incidents WHERE status = 'open')"
            ).fetchone()
        except ERRORS as exc:
            raise StorageError(f"cannot read the store: {exc}") from exc
        return tuple(row)

    def last_event_id(self) -> int:
        """The row id of the newest lifecycle event (0 without any): delivery's cursor starts there."""
        row = self.db.execute("SELECT MAX(id) FROM incident_events").fetchone()
        return int(row[0] or 0)

    def events(self, inc_id: str | None = None) -> Iterator[dict[str, Any]]:
        sql = ("SELECT ts, event, incident, kind, root, affected_endpoints, affected_customers, affected_nodes,"
               " into_incident FROM incident_events")
        args: tuple[Any, ...] = ()
        if inc_id is not None:
            sql += " WHERE incident = ?"
            args = (inc_id,)
        for ts, ev, iid, kind, root, eps, custs, nodes, into in self.db.execute(sql + " ORDER BY id", args):
            yield {"ts": ts, "event": ev, "incident": iid, "kind": kind, "root": root,
                   "affected_endpoints": json.loads(eps), "affected_customers": json.loads(custs),
                   "affected_nodes": json.loads(nodes), "into": into}

    def actions(self, inc_id: str) -> list[tuple[float, str, str, str, float | None]]:
        return list(self.db.execute(
            "SELECT ts, action, author, text, done_at FROM incident_actions WHERE incident = ? ORDER BY id", (inc_id,)
        ))

    def etas(self) -> dict[str, float | None]:
        """The latest restoration estimate staff set per open incident (delivery tells desk and customers).

        None = the estimate was withdrawn. Explicit, not a missing key: an incident missing here may
        just have been resolved a moment ago, and must not make delivery announce a withdrawal.
        """
        out: dict[str, float | None] = {}
        for inc, text in self.db.execute(
            "SELECT a.incident, a.text FROM incident_actions a JOIN incidents i ON i.id = a.incident"
            " WHERE a.action = 'eta' AND i.status = 'open' ORDER BY a.id"
        ):
            if text == ETA_WITHDRAWN:
                out[inc] = None
                continue
            try:
                out[inc] = parse_ts(text)
            except ValueError:
                continue  # written by hand: not an ISO time
        return out

    def eta_authors(self) -> dict[str, str]:
        """Who set (or withdrew) the latest estimate per open incident: the desk's comment names them."""
        return {inc: author for inc, author in self.db.execute(
            "SELECT a.incident, a.author FROM incident_actions a JOIN incidents i ON i.id = a.incident"
            " WHERE a.action = 'eta' AND i.status = 'open' ORDER BY a.id"
        )}

    # ------------------------------------------------------------ staff actions

    def actions_after(self, after_id: int, limit: int = 1000) -> list[ActionRow]:
        """Actions recorded after row ``after_id``, oldest first (delivery tells the desk who did what)."""
        return [ActionRow(*r) for r in self.db.execute(
            "SELECT id, incident, ts, action, author, text FROM incident_actions WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )]

    def last_action_id(self) -> int:
        row = self.db.execute("SELECT MAX(id) FROM incident_actions").fetchone()
        return int(row[0] or 0)

    def add_action(self, inc_id: str, action: str, author: str, text: str, now: float) -> None:
        """Record an ack/note/resolve. Acks take effect at once; resolves are done by the daemon."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        row = self.incident(inc_id)
        with _tx(self.db):
            done = now if action != "resolve" else None
            self.db.execute(
                "INSERT INTO incident_actions (incident, ts, action, author, text, done_at) VALUES (?, ?, ?, ?, ?, ?)",
                (inc_id, now, action, author, text, done),
            )
            if action == "ack" and row.acked_at is None:
                self.db.execute("UPDATE incidents SET acked_at = ?, acked_by = ? WHERE id = ?", (now, author, inc_id))

    def pending_resolves(self) -> list[tuple[int, str]]:
        return list(self.db.execute(
            "SELECT id, incident FROM incident_actions WHERE action = 'resolve' AND done_at IS NULL ORDER BY id"
        ))

    # ------------------------------------------------------------ maintenance

    def add_window(
        self, node: str, start: float, end: float, reason: str, author: str, customers: Sequence[str], now: float
    ) -> int:
        with _tx(self.db):
            cur = self.db.execute(
                'INSERT INTO maintenance (node, start, "end", reason, author, customers, created_at)'
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (node, start, end, reason, author, json.dumps(list(customers)), now),
            )
            window_id = int(cur.fetchall()[0][0])
            self._bump()
        return window_id

    def remove_window(self, window_id: int, now: float) -> None:
        with _tx(self.db):
            cur = self.db.execute(
                "UPDATE maintenance SET removed_at = ? WHERE id = ? AND removed_at IS NULL", (now, window_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no active maintenance window {window_id}")
            self._bump()

    def maintenance(self, *, include_removed: bool = False) -> list[MaintenanceRow]:
        sql = 'SELECT id, node, start, "end", reason, author, customers, created_at, removed_at FROM maintenance'
        if not include_removed:
            sql += " WHERE removed_at IS NULL"
        return [
            MaintenanceRow(i, n, s, e, r, a, tuple(json.loads(c)), ca, ra)
            for i, n, s, e, r, a, c, ca, ra in self.db.execute(sql + " ORDER BY start, id")
        ]

    def windows(self) -> list[Window]:
        return [Window(m.id, m.node, m.start, m.end, m.reason) for m in self.maintenance()]

    def maintenance_rev(self) -> str:
        row = self.db.execute("SELECT value FROM correlation_meta WHERE key = 'maintenance_rev'").fetchone()
        return str(row[0]) if row else "0"

    def _bump(self) -> None:
        self.db.execute(
            "INSERT INTO correlation_meta (key, value) VALUES ('maintenance_rev', '1') ON CONFLICT(key)"
            " DO UPDATE SET value = CAST(CAST(correlation_meta.value AS INTEGER) + 1 AS TEXT)"
        )


_LOAD_SQL = (
    "SELECT id, seq, kind, basis, root, opened_at, grace_from, clear_since, last_update, was_outage, pending_since"
    " FROM incidents"
)


def _incident(row: tuple[Any, ...]) -> Incident:
    """An incident row (``_LOAD_SQL``) as the engine left it."""
    iid, seq, kind, _, root, opened_at, grace_from, clear_since, last_update, was_outage, pending = row
    return Incident(iid, seq, kind, root, opened_at, grace_from=grace_from, clear_since=clear_since,
                    last_update=last_update, was_outage=bool(was_outage), pending_since=pending)


_BULK = 64  # targets of one incident and operation from which one statement over a JSON array wins
_ROW_SQL_OPS = {
    ADD: "INSERT OR REPLACE INTO incident_targets (incident, target, down) VALUES (?, ?, 1)",
    RECOVERED: "UPDATE incident_targets SET down = 0 WHERE incident = ? AND target = ?",
    DROP: "DELETE FROM incident_targets WHERE incident = ? AND target = ?",
    LEFT_DOWN: "UPDATE incident_targets SET down = 2 WHERE incident = ? AND target = ?",  # see left_down()
}
_BULK_SQL = {
    ADD: "INSERT OR REPLACE INTO incident_targets (incident, target, down) SELECT ?, value, 1 FROM json_each(?)",
    RECOVERED: "UPDATE incident_targets SET down = 0 WHERE incident = ? AND target IN (SELECT value FROM json_each(?))",
    DROP: "DELETE FROM incident_targets WHERE incident = ? AND target IN (SELECT value FROM json_each(?))",
    LEFT_DOWN: "UPDATE incident_targets SET down = 2 WHERE incident = ? AND target IN (SELECT value FROM json_each(?))",
}
#: (re)attaching a target on other engines: the same as INSERT OR REPLACE on a table of its key and ``down``
_ATTACH = " ON CONFLICT (incident, target) DO UPDATE SET down = excluded.down"
_UPSERT_ROW = {**_ROW_SQL_OPS, ADD: "INSERT INTO incident_targets (incident, target, down) VALUES (?, ?, 1)" + _ATTACH}
_UPSERT_BULK = {**_BULK_SQL, ADD: "INSERT INTO incident_targets (incident, target, down)"
                " SELECT ?, value, 1 FROM json_each(?) WHERE true" + _ATTACH}  # (WHERE: SQLite's parser wants it)
def _basis_of(e: IncidentEvent) -> Basis:
    """The basis of an incident opened and closed within one step (not open any more): its kind, or
    ``levels`` for weak levels (they read so; the report and status page tell them apart by it)."""
    return LEVELS_BASIS if e.kind == "degraded" and weak_levels(e.detail) else e.kind


_ROW_SQL = (
    "SELECT i.id, i.kind, i.root, i.status, i.opened_at, i.updated_at, i.cleared_at, i.closed_at, i.merged_into,"
    " i.acked_at, i.acked_by, i.was_outage, i.basis FROM incidents i"
)

