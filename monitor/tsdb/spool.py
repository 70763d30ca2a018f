"""Bounded on-disk spool of line-protocol batches, replayed oldest-first.

Each batch is one segment file ``<seq>-<points>.lp`` (sequence numbers increase monotonically, the
point count is in the name so a restart can size the spool from a directory listing). A segment
is written to a ``.tmp`` file, fsync'd and renamed, so a crash leaves either a whole segment or
none. A segment is deleted only after the database acknowledged it; a crash in between resends
it, which is harmless because a point with the same measurement, tags and timestamp overwrites
itself. When the spool is over ``max_bytes`` the OLDEST segments go first.

Synchronous on purpose: the writer calls these methods through ``asyncio.to_thread`` under one
lock, so the event loop (and polling) never waits for the disk.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import StorageError

_NAME = re.compile(r"^(\d{16})-(\d+)\.lp$")


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    seq: int
    points: int
    size: int
    path: Path


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(directory / "spool.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the spool directory {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise StorageError(f"the spool directory {directory} is in use by another writer") from exc
        self._mutex = threading.Lock()  # the writer may persist from the loop while a thread appends
        self._segments: list[Segment] = []
        for path in directory.iterdir():
            match = _NAME.match(path.name)
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)  # a write that never completed: never acknowledged either
            elif match:
                self._segments.append(Segment(int(match[1]), int(match[2]), path.stat().st_size, path))
        self._segments.sort()
        self._next_seq = self._segments[-1].seq + 1 if self._segments else 1
        self.points = sum(s.points for s in self._segments)
        self.bytes = sum(s.size for s in self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def reserve(self) -> int:
        """The next sequence number: taken when a batch leaves the buffer, so order is kept even
        if that batch only reaches the spool after later ones (its write failed)."""
        with self._mutex:
            seq = self._next_seq
            self._next_seq += 1
            return seq

    def append(self, seq: int, body: bytes, points: int, protected: frozenset[int] = frozenset()) -> list[Segment]:
        """Store one batch; return the segments dropped to stay under ``max_bytes`` (oldest first).

        ``protected`` segments (being replayed right now) are never dropped. The new batch itself
        is dropped instead of written when it is among the oldest that must go.
        """
        with self._mutex:
            if any(s.seq == seq for s in self._segments):
                return []  # already stored (a cancelled append that completed anyway)
            return self._append(seq, body, points, protected)

    def _append(self, seq: int, body: bytes, points: int, protected: frozenset[int]) -> list[Segment]:
        new = Segment(seq, points, len(body), self.directory / f"{seq:016d}-{points}.lp")
        candidates = sorted([s for s in self._segments if s.seq not in protected] + [new])
        dropped: list[Segment] = []
        excess = self.bytes + new.size - self.max_bytes
        while excess > 0 and candidates:
            victim = candidates.pop(0)
            dropped.append(victim)
            excess -= victim.size
        for victim in dropped:
            if victim is not new:
                self._delete(victim)
        if new not in dropped:
            self._write(new, body)
        return dropped

    def head(self, max_points: int) -> list[Segment]:
        """The oldest segments, consecutive, up to ``max_points`` in total (at least one)."""
        out: list[Segment] = []
        total = 0
        with self._mutex:
            segments = list(self._segments)
        for seg in segments:
            if out and total + seg.points > max_points:
                break
            out.append(seg)
            total += seg.points
        return out

    def read(self, segments: list[Segment]) -> bytes:
        try:
            return b"".join(seg.path.read_bytes() for seg in segments)
        except OSError as exc:
            raise StorageError(f"cannot read the spool: {exc.strerror}") from exc

    def remove(self, segments: list[Segment]) -> None:
        """Forget segments the database acknowledged (or rejected for good)."""
        with self._mutex:
            for seg in segments:
                if seg in self._segments:
                    self._delete(seg)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def _write(self, seg: Segment, body: bytes) -> None:
        tmp = seg.path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, seg.path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(f"cannot write the spool in {self.directory}: {exc.strerror}") from exc
        bisect.insort(self._segments, seg)
        self.points += seg.points
        self.bytes += seg.size

    def _delete(self, seg: Segment) -> None:
        with contextlib.suppress(OSError):  # if it stays, a later writer resends it: harmless
            seg.path.unlink()
        self._segments.remove(seg)
        self.points -= seg.points
        self.bytes -= seg.size
