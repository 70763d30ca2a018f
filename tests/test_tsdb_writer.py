"""Writer behaviour that needs no database, or a database that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.errors import StorageError, StoragePermanent, StorageRetryable
from monitor.inventory.model import TimeseriesSettings
from monitor.tsdb import make_writer
from monitor.tsdb.backend import http_error, public_url
from monitor.tsdb.writer import TimeseriesWriter
from tests.tsdb_support import icmp_stream, make, until


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A real TCP server that accepts connections and never answers: a hung database."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def spooled_points(spool: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in spool.glob("*.lp"))


def test_no_database_configured_means_no_writer(tmp_path: Path) -> None:
    assert make_writer(TimeseriesSettings(), tmp_path) is None
    assert not (tmp_path / "spool").exists()


async def test_spool_dir_defaults_under_the_state_dir(tmp_path: Path) -> None:
    writer = make_writer(TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x"), tmp_path)
    assert isinstance(writer, TimeseriesWriter)
    assert (tmp_path / "spool" / "spool.lock").exists()
    await writer.close()


async def test_a_hung_database_never_blocks_submit_and_memory_stays_bounded(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    settings = TimeseriesSettings(kind="influxdb1", url="", database="monitor", batch_size=10,
                                  flush_interval=0.01, timeout=30.0)
    async with silent_server() as url:
        writer = make(dataclasses.replace(settings, url=url), spool, max_buffer_points=50)
        task = asyncio.create_task(writer.run())
        writer.submit(icmp_stream(0))
        await until(lambda: writer.buffered_points == 0, what="first batch in flight")
        for s in range(1, 31):
            writer.submit(icmp_stream(s))  # returns at once although the first write hangs
        assert writer.buffered_points == 300
        await until(lambda: writer.buffered_points <= 50, what="overflow spilled to the spool")
        assert writer.spool_points >= 250
        task.cancel()  # the daemon's TaskGroup going down: nothing in memory may be lost
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.close()
    assert spooled_points(spool) == writer.spool_points == 310  # the hung batch too
    sent = sorted(int(line.split(b"sent=")[1].split(b"i")[0]) for f in sorted(spool.glob("*.lp"))
                  for line in f.read_bytes().splitlines())
    assert sent == sorted(s for s in range(31) for _ in range(10))


async def test_spool_replays_in_order_of_submission(tmp_path: Path) -> None:
    """Segments are named by a sequence taken when a batch leaves the buffer: the file order is the
    submission order, even for a batch whose failed write was spooled after later ones."""
    settings = TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x", batch_size=10)
    spool = tmp_path / "spool"
    writer = make(settings, spool)
    for s in range(12):
        writer.submit(icmp_stream(s))
    await writer.close()
    order = [int(line.split(b"sent=")[1].split(b"i")[0]) for f in sorted(spool.glob("*.lp"))
             for line in f.read_bytes().splitlines()]
    assert order == [s for s in range(12) for _ in range(10)]


async def test_one_writer_per_spool_dir(tmp_path: Path) -> None:
    settings = TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x")
    first = make(settings, tmp_path)
    with pytest.raises(StorageError, match="in use"):
        make(settings, tmp_path)
    await first.close()
    await make(settings, tmp_path).close()  # released on close


@pytest.mark.parametrize(("status", "kind"), [(500, StorageRetryable), (503, StorageRetryable),
                                              (429, StorageRetryable), (400, StoragePermanent),
                                              (401, StoragePermanent), (404, StoragePermanent)])
def test_http_status_classification(status: int, kind: type[Exception]) -> None:
    error = http_error("influxdb1 http://db:8086", status, "x " * 500)
    assert type(error) is kind
    assert len(str(error)) < 260  # a server echoing a whole batch does not flood the log


def test_logged_url_has_no_user_info() -> None:
    assert public_url("https://noc:s3cret@influx.example:8086/path?u=a&p=b") == "https://influx.example:8086"
    assert public_url("http://[::1]:8086") == "http://[::1]:8086"
