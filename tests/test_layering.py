"""Import seams that keep packages apart (issue 11): checked in a fresh interpreter, since whatever
this test process imported already would hide an import that a module makes."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    return {m for m in out.stdout.split() if m.startswith("monitor")}


@pytest.mark.parametrize("module", ["monitor.api.config", "monitor.api.links", "monitor.delivery.config"])
def test_settings_that_hold_secrets_do_not_import_the_inventory(module: str) -> None:
    """The inventory holds the API and delivery settings; they hold Secrets. With Secret in the
    inventory's model the two packages imported each other."""
    assert not {m for m in _imported(module) if m.startswith("monitor.inventory")}
