"""A configured secret (SNMP community, token, password) that never shows up in logs or errors.

Its own module, with no imports, so every package that carries a secret (``inventory``, ``api``,
``delivery``, ``tsdb``) can name the type without importing the inventory's model: the API and
delivery settings are part of the inventory, and importing ``inventory.model`` from them made a
circle.
"""

from __future__ import annotations


class Secret:
    """A secret value that cannot leak by accident.

    ``str()``/``repr()``/f-strings show only where the value came from (``env:SNMP_COMMUNITY``),
    never the value; code that must send it calls :meth:`reveal`.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value and other.source == self.source

    def __hash__(self) -> int:
        return hash((self.source, self._value))
