"""How a time zone is named to the people who read our times: "hora de Colombia", "Colombia time".

Reports, notices and tickets print local times of the ISP's configured zone (``delivery.timezone``,
America/Bogota in the example); a bare "06:06" or an IANA name means little to a customer, so every
text that prints a time says in whose clock it is. UTC is said as "UTC" and only used when asked.
"""

from __future__ import annotations

from monitor.inventory.model import Inventory

#: IANA zone → (Spanish, English) name of the place whose clock it is; other zones are named by their id
PLACES: dict[str, tuple[str, str]] = {
    "America/Bogota": ("Colombia", "Colombia"),
    "America/Lima": ("Perú", "Peru"),
    "America/Guayaquil": ("Ecuador", "Ecuador"),
    "America/Caracas": ("Venezuela", "Venezuela"),
    "America/Panama": ("Panamá", "Panama"),
    "America/La_Paz": ("Bolivia", "Bolivia"),
    "America/Santiago": ("Chile", "Chile"),
    "America/Argentina/Buenos_Aires": ("Argentina", "Argentina"),
    "America/Asuncion": ("Paraguay", "Paraguay"),
    "America/Montevideo": ("Uruguay", "Uruguay"),
    "America/Mexico_City": ("Ciudad de México", "Mexico City"),
    "America/Costa_Rica": ("Costa Rica", "Costa Rica"),
    "America/Guatemala": ("Guatemala", "Guatemala"),
    "America/Santo_Domingo": ("República Dominicana", "the Dominican Republic"),
    "Europe/Madrid": ("España peninsular", "peninsular Spain"),
}
UTC_NAMES = ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "GMT", "Etc/GMT", "Universal")


def zone_words(tz: str, lang: str, short: bool = False) -> str:
    """'hora de Colombia' / 'Colombia time'; 'UTC'; 'hora local (Asia/Tokyo)' for a zone without a name here.

    ``short`` (SMS): a zone without a name here is only 'hora local' / 'local time', which its reader
    (a customer or technician in that zone) understands; its id would cost an SMS its 160 characters.
    """
    if tz in UTC_NAMES:
        return "UTC"
    place = PLACES.get(tz)
    if lang == "es":
        return f"hora de {place[0]}" if place else "hora local" if short else f"hora local ({tz})"
    return f"{place[1]} time" if place else "local time" if short else f"local time ({tz})"


def configured_zone(inv: Inventory) -> str:
    """The ISP's zone: the delivery section's (its notices), else the status page's, else UTC."""
    if inv.delivery is not None:
        return inv.delivery.timezone
    if inv.status_page is not None:
        return inv.status_page.timezone
    return "UTC"
