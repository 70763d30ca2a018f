"""scripts/setup and scripts/run-example: a second start needs no network (issue 18, Operations).

The scripts run for real in a copy of the checkout whose `.venv/bin/python` and `.venv/bin/monitor`
are recording stand-ins, so the test sees every pip call without touching the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checkout(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("setup", "run-example"):
        shutil.copy2(ROOT / "scripts" / name, repo / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    calls = tmp_path / "calls.log"
    bindir = repo / ".venv" / "bin"
    bindir.mkdir(parents=True)
    for tool in ("python", "monitor"):
        stub = bindir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >>"{calls}"\n')
        stub.chmod(0o755)
    return repo, calls


def _run(repo: Path, *args: str) -> None:
    subprocess.run(args, cwd=repo, check=True, timeout=60, env=dict(os.environ),
                   stdout=subprocess.DEVNULL)


def _pip_calls(calls: Path) -> list[str]:
    if not calls.exists():
        return []
    return [line for line in calls.read_text().splitlines() if " -m pip " in line]


def test_run_example_runs_pip_once_then_starts_offline(tmp_path: Path) -> None:
    repo, calls = _checkout(tmp_path)
    _run(repo, "scripts/run-example")
    assert _pip_calls(calls), "the first start installs the package"
    calls.unlink()
    _run(repo, "scripts/run-example", "--log-level", "info")
    assert _pip_calls(calls) == []
    assert calls.read_text().splitlines() == [
        "monitor run --config config/sites.yaml --log-level info"]


def test_setup_reinstalls_when_pyproject_or_extras_change(tmp_path: Path) -> None:
    repo, calls = _checkout(tmp_path)
    _run(repo, "scripts/setup")
    calls.unlink()
    _run(repo, "scripts/setup", "--test")            # the test extras were never installed
    assert any("-e .[test]" in line for line in _pip_calls(calls))
    calls.unlink()
    _run(repo, "scripts/setup")                      # a test install serves a plain one
    assert _pip_calls(calls) == []
    with (repo / "pyproject.toml").open("a") as f:
        f.write("\n# a dependency changed\n")
    _run(repo, "scripts/setup")
    assert any("-e ." in line for line in _pip_calls(calls))


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """A `{ text = ... }` table is deprecated since setuptools 77 (PEP 639) and warns on every build."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "GPL-3.0-or-later"
    assert "setuptools>=77" in meta["build-system"]["requires"]
