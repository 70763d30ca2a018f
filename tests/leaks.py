"""What a test leaves open: this process's TCP connections to a port (a socket the code forgot to close
stays connected until the garbage collector finds it, which may be tests later, or never in the test)."""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator
from pathlib import Path


def _inodes_to(port: int) -> set[str]:
    """Inodes of every TCP socket on the host whose remote end is ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def connections_to(port: int) -> int:
    """How many of this process's open sockets are TCP connections to ``port``."""
    ours = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            link = str(fd.readlink())
        except OSError:  # closed since the listing
            continue
        if link.startswith("socket:["):
            ours.add(link[len("socket:["):-1])
    return len(ours & _inodes_to(port))


@contextlib.contextmanager
def unclosed() -> Iterator[list[str]]:
    """The ResourceWarnings of the block, every one (the collector runs at its end, so a leak shows in
    the test that made it rather than in whichever later test the collector happens to run in)."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            yield found
        finally:
            gc.collect()
            found.extend(str(w.message) for w in caught if issubclass(w.category, ResourceWarning))
