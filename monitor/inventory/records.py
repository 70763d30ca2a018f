"""Intermediate records of the loader: what one node/endpoint/customer said, and where it said it.

Why: nodes may name parents defined later and customers come from two files (YAML and the billing
CSV), so references are checked only once everything is read. Until then each entry keeps the
location of every value that may still turn out wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.inventory.fields import Problems
from monitor.inventory.model import SnmpSettings, TargetRole
from monitor.inventory.settings import Override


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    line: int
    path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def err(self, problems: Problems, message: str) -> None:
        problems.add(self.file, self.line, self.path, message)


@dataclass(slots=True)
class RawTarget:
    id: str
    kind: str
    role: TargetRole
    where: Where  # of the id
    address: str | None = None
    address_where: Where | None = None
    parents: list[tuple[str, Where]] = field(default_factory=list)
    site: tuple[str, Where] | None = None
    municipality: tuple[str, Where] | None = None
    name: str | None = None
    snmp: SnmpSettings | None = None
    snmp_where: Where | None = None
    polling: Override = field(default_factory=dict)
    polling_where: Where | None = None
    customer: str | None = None
    table_key: tuple[str, str, Where] | None = None  # (kind, value as written, where): see graph.table_keys
    pon_port: tuple[str, Where] | None = None  # the PON port an ONU hangs from, as written (see graph)


@dataclass(slots=True)
class RawCustomer:
    id: str
    name: str
    where: Where  # of the id
    service_class: tuple[str, Where] | None = None
    email: str | None = None
    phone: str | None = None
    language: str = "es"
    notify: bool = True
    endpoints: list[RawTarget] = field(default_factory=list)


class Registry:
    """Ids and addresses seen so far, across nodes, endpoints and both files: duplicates are errors."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.target_ids: dict[str, Where] = {}
        self.customer_ids: dict[str, Where] = {}
        self.addresses: dict[str, tuple[str, Where]] = {}

    def claim_target(self, target_id: str, where: Where) -> bool:
        return self._claim(self.target_ids, target_id, where)

    def claim_customer(self, customer_id: str, where: Where) -> bool:
        return self._claim(self.customer_ids, customer_id, where)

    def _claim(self, seen: dict[str, Where], key: str, where: Where) -> bool:
        if key in seen:
            where.err(self.problems, f"duplicate id {key!r} (already used at {seen[key]})")
            return False
        seen[key] = where
        return True

    def claim_address(self, address: str, owner: str, where: Where) -> None:
        if address in self.addresses:
            other, first = self.addresses[address]
            where.err(self.problems, f"duplicate address {address} (already used by {other} at {first})")
        else:
            self.addresses[address] = (owner, where)
