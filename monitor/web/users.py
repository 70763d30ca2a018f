"""Staff users of the board: ``<state_dir>/users.json``, managed with ``monitor users add|list|remove``,
and the config's ``api.users`` (bcrypt hashes from ``monitor users hash``; they win over the file).

Passwords are hashed with bcrypt (cost 12), never stored or logged in clear. The file is written
atomically with mode 0600. Roles: ``viewer`` (sees the board), ``operator`` (acts on incidents and
maintenance), ``admin`` (everything; reserved for user management through the board later).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.errors import ConfigError

if TYPE_CHECKING:
    from monitor.api.config import BoardUser

ROLES = ("viewer", "operator", "admin")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
MIN_PASSWORD = 10
MAX_PASSWORD = 72  # bcrypt looks at 72 bytes at most: longer would be silently cut
COST = 12
FILE = "users.json"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    hash: bytes

    def may(self, role: str) -> bool:
        """Whether this user has at least ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str, cost: int = COST) -> bytes:
    import bcrypt  # only the board and `monitor users` need it

    raw = password.encode()
    if len(password) < MIN_PASSWORD or len(raw) > MAX_PASSWORD:
        raise ConfigError(f"the password must have {MIN_PASSWORD} characters or more and at most {MAX_PASSWORD} bytes")
    return bytes(bcrypt.hashpw(raw, bcrypt.gensalt(cost)))


_DUMMY: list[bytes] = []


def check_password(user: User | None, password: str) -> bool:
    """Constant work whether or not the user exists (an unknown name is checked against a stand-in)."""
    import bcrypt

    if not _DUMMY:
        _DUMMY.append(bcrypt.hashpw(b"stand-in password", bcrypt.gensalt(COST)))
    raw = password.encode()[:MAX_PASSWORD]
    ok = bool(bcrypt.checkpw(raw, user.hash if user is not None else _DUMMY[0]))
    return ok and user is not None


def load_users(path: Path) -> dict[str, User]:
    """The users in ``path``; a missing file is no users (nobody can log in)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc}") from exc
    out = {}
    for u in doc.get("users", []) if isinstance(doc, dict) else []:
        if (isinstance(u, dict) and isinstance(u.get("name"), str) and NAME_RE.fullmatch(u["name"])
                and u.get("role") in ROLES and isinstance(u.get("hash"), str)):
            out[u["name"]] = User(u["name"], u["role"], u["hash"].encode())
        else:
            raise ConfigError(f"{path}: bad user entry (expected name, role, hash)")
    return out


def with_config(file_users: dict[str, User], config: Iterable[BoardUser]) -> dict[str, User]:
    """The file's users and the config's; a name in both is the config's (configuration management
    decides, a stale file entry cannot keep an old role or password)."""
    return {**file_users, **{u.name: User(u.name, u.role, u.password_hash) for u in config}}


def save_users(path: Path, users: dict[str, User]) -> None:
    doc = {"users": [{"name": u.name, "role": u.role, "hash": u.hash.decode()} for u in users.values()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- command line


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="staff users of the board (add, list, remove)")
    p.add_argument("--config", type=Path, default=Path("config/sites.yaml"), help="inventory (YAML)")
    usub = p.add_subparsers(dest="action", required=True)
    a = usub.add_parser("add", help="add a user or set a user's role and password")
    a.add_argument("name")
    a.add_argument("--role", choices=ROLES, required=True)
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    h = usub.add_parser("hash", help="print a password's bcrypt hash for the config's api.users")
    h.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    usub.add_parser("list", help="names and roles")
    r = usub.add_parser("remove", help="remove a user")
    r.add_argument("name")
    p.set_defaults(handler=main)


def users_path(config: Path) -> Path:
    from monitor.inventory.loader import load_inventory

    inv = load_inventory(config, secrets=False)
    state_dir = Path(inv.daemon.state_dir)
    if not state_dir.is_absolute():
        state_dir = config.resolve().parent / state_dir
    return state_dir / FILE


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise ConfigError("the passwords differ")
    return password


def main(args: argparse.Namespace) -> int:
    if args.action == "hash":  # needs no config: the hash goes into one
        print(hash_password(_password(args.password_stdin)).decode())
        return 0
    path = users_path(args.config)
    users = load_users(path)
    if args.action == "list":
        for u in users.values():
            print(f"{u.name}\t{u.role}")
        return 0
    if args.action == "remove":
        if users.pop(args.name, None) is None:
            raise ConfigError(f"no user {args.name!r}")
        save_users(path, users)
        print(f"removed {args.name}")
        return 0
    if not NAME_RE.fullmatch(args.name):
        raise ConfigError(f"bad user name {args.name!r} (lower-case letters, digits, '.', '_', '-'; 32 at most)")
    users[args.name] = User(args.name, args.role, hash_password(_password(args.password_stdin)))
    save_users(path, users)
    print(f"{args.name}: {args.role} (in {path})")
    return 0
