"""Open the files a config names (the inventory, secret files) without ever blocking on the open.

Why: opening a FIFO for reading waits for a writer, forever if there is none, and a reload must not
hang on a config or secret path that turned out to be a named pipe. The open is non-blocking
(a FIFO without a writer then reads as empty), the reads afterwards are ordinary blocking reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


def open_binary(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
