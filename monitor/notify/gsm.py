"""SMS text in the GSM 03.38 alphabet, so a Spanish notice stays one 160-character SMS.

One character outside GSM-7 (``í``, ``á``, ``ó``, ``ú``, curly quotes, an emoji) makes the gateway send
the whole message as UCS-2: 70 characters per SMS instead of 160, so a 150-character notice costs
three. Spanish needs only a few letters GSM-7 lacks; they become their base letter (``caída`` →
``caida``), which every reader understands, while ``ñ``, ``é``, ``¿`` and ``¡`` are GSM-7 and stay.
"""

from __future__ import annotations

import unicodedata

# the default alphabet (one septet each) and the extension table (two: escape + character)
BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENDED = frozenset("^{}\\[~]|€")
_SAME = {"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "-", "…": "...", "\u00a0": " ", "\t": " "}


def to_gsm7(text: str) -> str:
    """The text with every character outside GSM-7 replaced: accents dropped, quotes and dashes
    made plain, anything else (emoji, other scripts) as ``?``."""
    out = []
    for ch in text:
        if ch in BASIC or ch in EXTENDED:
            out.append(ch)
            continue
        if ch in _SAME:
            out.append(_SAME[ch])
            continue
        base = unicodedata.normalize("NFKD", ch)[0]
        out.append(base if base in BASIC else "?")
    return "".join(out)


def parts(text: str) -> int:
    """How many SMS the text takes: GSM-7 160 (153 per part when split), else UCS-2 70 (67)."""
    if all(ch in BASIC or ch in EXTENDED for ch in text):
        septets = len(text) + sum(ch in EXTENDED for ch in text)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)
