"""Write snmpsim ``.snmprec`` files from Python (test fixtures built from vendor definitions, benches).

snmpsim answers GETNEXT/GETBULK by searching the file in OID order, so records are written sorted by
numeric OID. Rewriting a file while snmpsim runs changes what it serves (see tests/test_table_daemon.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

Record = tuple[str, str]  # (snmpsim tag, value text), e.g. ("2", "-2481"), ("4x", "48575443...")
SYSTEM: dict[str, Record] = {
    "1.3.6.1.2.1.1.1.0": ("4", "test agent"),
    "1.3.6.1.2.1.1.3.0": ("67", "123456"),
}


def snmprec_text(records: Mapping[str, Record]) -> str:
    merged = {**SYSTEM, **records}
    ordered = sorted(merged.items(), key=lambda kv: tuple(int(p) for p in kv[0].strip(".").split(".")))
    return "".join(f"{oid.strip('.')}|{tag}|{value}\n" for oid, (tag, value) in ordered)


def write_snmprec(path: Path, records: Mapping[str, Record]) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(snmprec_text(records))
    os.replace(tmp, path)
