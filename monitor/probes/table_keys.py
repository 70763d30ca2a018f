"""One spelling per endpoint identifier, so the config and the device's table agree.

ONU serials are written ``HWTC1F14CAAD`` on labels and in CLIs but travel as 8 raw bytes (4 ASCII
vendor letters + 4 binary bytes) or 16 hex digits; MACs come as ``AA-BB-..``, ``aabb.ccdd.eeff`` or
6 raw bytes; row indexes as dotted numbers. :func:`normalise_key` maps every accepted spelling to
one form and rejects anything else with a message fit for a config error.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_SERIAL = re.compile(r"^[\x21-\x7e]{1,64}$")
MAX_KEY_LEN = 64


def normalise_key(kind: str, value: str) -> str:
    """The canonical form of an identifier of ``kind``; :class:`ValueError` says what is wrong."""
    text = value.strip()
    if not text or len(text) > MAX_KEY_LEN * 2:
        raise ValueError(f"{kind}: expected 1 to {MAX_KEY_LEN} characters")
    if kind == "onu_serial":
        return _serial(text)
    if kind == "station_mac":
        return _mac(text)
    if kind in ("onu_index", "station_index"):
        return _index(text)
    raise ValueError(f"unknown identifier kind {kind!r}")


def _serial(text: str) -> str:
    if len(text) == 16 and _HEX.match(text):
        raw = bytes.fromhex(text)
        vendor = raw[:4]
        if all(0x41 <= b <= 0x5A or 0x30 <= b <= 0x39 for b in vendor):  # 4 ASCII letters/digits
            return vendor.decode() + raw[4:].hex().upper()
        return text.upper()
    if not _SERIAL.match(text):
        raise ValueError(f"onu_serial: expected printable characters without spaces, got {text[:40]!r}")
    return text.upper()


def _mac(text: str) -> str:
    digits = re.sub(r"[:\-.\s]", "", text)
    if len(digits) != 12 or not _HEX.match(digits):
        raise ValueError(f"station_mac: expected a MAC address like aa:bb:cc:dd:ee:ff, got {text[:40]!r}")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2)).lower()


def _index(text: str) -> str:
    parts = text.split(".")
    if len(parts) > 16 or not all(p.isdigit() and p.isascii() and int(p) < 2**32 for p in parts):
        raise ValueError(f"expected a row index of dotted numbers like 4194304000.5, got {text[:40]!r}")
    return ".".join(str(int(p)) for p in parts)
