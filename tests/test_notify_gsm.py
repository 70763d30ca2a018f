"""GSM-7 text for SMS: Spanish notices stay one 160-character SMS instead of 70-character UCS-2 parts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.notify.gsm import BASIC, EXTENDED, parts, to_gsm7


def test_spanish_keeps_what_gsm7_has_and_drops_the_accents_it_lacks() -> None:
    assert to_gsm7("caída en Tame, duración 2 h: ¿ñandú? ¡Sí! “ok” – listo…") == \
        'caida en Tame, duracion 2 h: ¿ñandu? ¡Si! "ok" - listo...'
    assert to_gsm7("Fallo 🔥 Δ") == "Fallo ? Δ"  # what has no GSM-7 form is a "?", Greek capitals GSM-7 has stay


def test_parts_count_septets_or_ucs2_units() -> None:
    assert parts("a" * 160) == 1 and parts("a" * 161) == 2 and parts("a" * 306) == 2 and parts("a" * 307) == 3
    assert parts("€" * 80) == 1 and parts("€" * 81) == 2  # extension characters take two septets
    assert parts("í" * 70) == 1 and parts("í" * 71) == 2  # one í: the whole text is UCS-2
    text = "Llanos Net: servicio restablecido en Arauca a las 06:16 (duración 10 min). Ref INC-000001"
    assert parts(text + " " * 60) == 3 and parts(to_gsm7(text + " " * 60)) == 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=300))
def test_any_text_becomes_gsm7_and_stays_so(text: str) -> None:
    out = to_gsm7(text)
    assert all(ch in BASIC or ch in EXTENDED for ch in out)
    assert to_gsm7(out) == out
    assert len(out) >= len(text) and parts(out) >= 1
