"""Read the subscriber list exported from billing (``customers_file``), one row per endpoint.

Why a CSV: billing systems export spreadsheets, and most residential subscribers live there rather
than in hand-written YAML. Rows sharing a ``customer_id`` are one customer with several endpoints;
their customer columns must agree. Problems name ``file:LINE: column``.
"""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

from monitor.inventory.entries import LANGUAGES, check_email, parse_address
from monitor.inventory.fields import ID_HINT, ID_RE, Problems
from monitor.inventory.model import ENDPOINT_KINDS
from monitor.inventory.records import RawCustomer, RawTarget, Registry, Where

REQUIRED = ("customer_id", "name", "service_class", "endpoint_id", "endpoint_kind", "address", "parent")
OPTIONAL = ("email", "phone", "language", "notify", "endpoint_name")
CUSTOMER_COLUMNS = ("name", "service_class", "email", "phone", "language", "notify")
TRUE = ("true", "yes", "si", "sí", "1")
FALSE = ("false", "no", "0")
MAX_BYTES = 256 * 2**20  # 50,000 subscribers export to ~5 MiB


def read_customers(path: Path, display: str, problems: Problems, registry: Registry) -> list[RawCustomer]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:  # -sig: Excel exports start with a BOM
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:  # /dev/urandom would never end
                problems.add(display, None, "", f"the customers file must be a regular file of at most "
                                                f"{MAX_BYTES // 2**20} MiB")
                return []
            return _Reader(display, problems, registry).read(csv.reader(fh))
    except OSError as exc:
        problems.add(display, None, "", f"cannot read the customers file: {exc.strerror}")
    except UnicodeDecodeError:
        problems.add(display, None, "", "the customers file is not UTF-8 text (export it as CSV UTF-8)")
    except csv.Error as exc:
        problems.add(display, None, "", f"bad CSV: {exc}")
    return []


class _Reader:
    def __init__(self, display: str, problems: Problems, registry: Registry) -> None:
        self.file = display
        self.problems = problems
        self.registry = registry
        self.customers: dict[str, RawCustomer] = {}
        self.first_row: dict[str, tuple[int, dict[str, str]]] = {}
        self.line = 1

    def read(self, reader: csv.Reader) -> list[RawCustomer]:  # type: ignore[name-defined]
        header = next(reader, None)
        if header is None:
            self.problems.add(self.file, 1, "", f"empty file (expected a header row: {','.join(REQUIRED)})")
            return []
        columns = [h.strip() for h in header]
        bad = False
        for col in columns:
            if col not in REQUIRED + OPTIONAL:
                self.problems.add(self.file, 1, col, f"unknown column (allowed: {', '.join(REQUIRED + OPTIONAL)})")
                bad = True
        for col in REQUIRED:
            if col not in columns:
                self.problems.add(self.file, 1, col, "missing required column")
                bad = True
        if bad:
            return []
        end = reader.line_num
        for cells in reader:
            line, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(columns):
                self.problems.add(self.file, line, "", f"expected {len(columns)} columns, got {len(cells)}")
                continue
            self.row(line, {col: cell.strip() for col, cell in zip(columns, cells, strict=True)})
        return list(self.customers.values())

    def err(self, col: str, message: str) -> None:
        self.problems.add(self.file, self.line, col, message)

    def where(self, col: str) -> Where:
        return Where(self.file, self.line, col)

    def row(self, line: int, row: dict[str, str]) -> None:
        self.line = line
        err, where = self.err, self.where
        for col in REQUIRED:
            if not row[col]:
                err(col, "must not be empty")
        for col in ("customer_id", "endpoint_id", "parent"):
            if row[col] and not ID_RE.match(row[col]):
                err(col, f"bad id {row[col]!r} ({ID_HINT})")
                return
        if not all(row[col] for col in REQUIRED):
            return
        cust = self.customer(row)
        if cust is None:
            return
        kind = row["endpoint_kind"]
        if kind not in ENDPOINT_KINDS:
            err("endpoint_kind", f"bad value {kind!r} (expected one of: {', '.join(ENDPOINT_KINDS)})")
        if not self.registry.claim_target(row["endpoint_id"], where("endpoint_id")):
            return
        raw = RawTarget(row["endpoint_id"], kind, "endpoint", where("endpoint_id"),
                        name=row.get("endpoint_name") or cust.name, customer=cust.id,
                        parents=[(row["parent"], where("parent"))])
        raw.address, problem = parse_address(row["address"])
        if problem:
            err("address", problem)
        else:
            self.registry.claim_address(raw.address or "", raw.id, where("address"))
        cust.endpoints.append(raw)

    def customer(self, row: dict[str, str]) -> RawCustomer | None:
        """The row's customer: new (validated, id claimed), or the earlier one if the columns agree."""
        err, where = self.err, self.where
        cid = row["customer_id"]
        if cid in self.customers:
            first_line, first = self.first_row[cid]
            for col in CUSTOMER_COLUMNS:
                if row.get(col, "") != first.get(col, ""):
                    err(col, f"{row.get(col, '')!r} differs from line {first_line} ({first.get(col, '')!r}) "
                             f"for customer {cid}")
            return self.customers[cid]
        if not self.registry.claim_customer(cid, where("customer_id")):
            return None
        notify = row.get("notify", "").lower()
        if notify and notify not in TRUE + FALSE:
            err("notify", f"bad value {row['notify']!r} (expected true or false)")
        language = row.get("language") or "es"
        if language not in LANGUAGES:
            err("language", f"bad value {language!r} (expected one of: {', '.join(LANGUAGES)})")
        if problem := check_email(row.get("email") or None):
            err("email", problem)
        cust = RawCustomer(cid, row["name"], where("customer_id"), service_class=(row["service_class"],
                           where("service_class")), email=row.get("email") or None,
                           phone=row.get("phone") or None, language=language, notify=notify not in FALSE)
        self.customers[cid] = cust
        self.first_row[cid] = (self.line, row)
        return cust
