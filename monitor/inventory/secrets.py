"""Resolve secret references (``{env: NAME}`` / ``{file: PATH}`` / ``{credential: NAME}``) into Secrets.

``credential`` reads systemd's ``LoadCredential=`` files from ``$CREDENTIALS_DIRECTORY``, so a unit
can hand secrets to the service without an environment variable or a world-readable file.

Why references only: an inventory file gets copied, diffed, pasted into tickets and committed, so a
community string or v3 key written inline would leak. Every message here names the reference (the
variable or the file), never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from monitor.errors import SecretError
from monitor.inventory.fields import type_name
from monitor.inventory.files import open_binary
from monitor.secret import Secret

HOW = "use {env: NAME}, {file: PATH} or {credential: NAME}"
MAX_SECRET = 64 * 1024  # bytes; a key, a token or a PEM fits many times over


def check_reference(ref: object) -> tuple[str, str]:
    """(kind, name) of a well-formed reference; raises :class:`SecretError` otherwise."""
    if isinstance(ref, str | int | float) and not isinstance(ref, bool):
        raise SecretError(f"secrets cannot be written inline; {HOW}")
    if not isinstance(ref, dict) or len(ref) != 1 or next(iter(ref)) not in ("env", "file", "credential"):
        if isinstance(ref, dict):
            got = f"a mapping with keys {', '.join(sorted(map(str, ref)))}" if ref else "an empty mapping"
        else:
            got = type_name(ref)
        raise SecretError(f"expected a secret reference ({HOW}), got {got}")
    kind, name = next(iter(ref.items()))
    if not isinstance(name, str) or not name.strip():
        raise SecretError(f"{kind}: expects a non-empty string ({HOW})")
    return kind, name


def resolve_secret(ref: object, base_dir: Path, env: Mapping[str, str]) -> Secret:
    """Turn one reference into a Secret. Raises :class:`SecretError` with a value-free message."""
    kind, name = check_reference(ref)
    if kind == "env":
        return _from_env(name, env)
    if kind == "credential":
        return _from_credential(name, env)
    return _from_file(name, base_dir)


def _from_credential(name: str, env: Mapping[str, str]) -> Secret:
    folder = env.get("CREDENTIALS_DIRECTORY", "")
    if not folder:
        raise SecretError(
            f"credential {name}: CREDENTIALS_DIRECTORY is not set (systemd sets it for units with LoadCredential=)"
        )
    if "/" in name or name in (".", ".."):
        raise SecretError(f"credential {name}: expected a plain credential name, not a path")
    secret = _from_file(str(Path(folder) / name), Path(folder))
    return Secret(secret.reveal(), f"credential:{name}")


def _from_env(name: str, env: Mapping[str, str]) -> Secret:
    if name not in env:
        raise SecretError(f"environment variable {name} is not set")
    if not env[name]:
        raise SecretError(f"environment variable {name} is empty")
    return Secret(env[name], f"env:{name}")


def _from_file(name: str, base_dir: Path) -> Secret:
    path = Path(name) if Path(name).is_absolute() else base_dir / name
    try:
        with open_binary(path) as fh:
            data = fh.read(MAX_SECRET + 1)  # bounded: {file: /dev/zero} must not hang a reload
        if len(data) > MAX_SECRET:
            raise SecretError(f"secret file {name} is larger than {MAX_SECRET // 1024} KiB (expected one secret)")
        value = data.decode("utf-8")
    except FileNotFoundError as exc:
        raise SecretError(f"secret file {name} does not exist (looked for {path})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretError(f"cannot read secret file {name}: {reason}") from exc
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        raise SecretError(f"secret file {name} is empty")
    return Secret(value, f"file:{name}")
