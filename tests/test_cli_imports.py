"""The command line imports only the module of the subcommand asked for (issue 12: a one-shot
``monitor probe`` spent ~0.2 s of its ~0.55 s importing the report, replay, demo, poller and web
modules to build parsers it never used), and every subcommand is still reachable and listed."""

from __future__ import annotations

import argparse
import subprocess
import sys

from monitor.cli import _SUBCOMMANDS, _command, _parser


def _choices(p: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_every_subcommand_is_registered_by_its_own_module_alone() -> None:
    everything = _choices(_parser())
    assert everything[:3] == ["run", "check-config", "probe"]
    assert set(everything) == {"run", "check-config", "probe"}.union(*(names for names, _ in _SUBCOMMANDS))
    for name in everything:
        assert name in _choices(_parser(name)), name


def test_the_command_is_the_first_word_and_an_unknown_one_gets_every_parser() -> None:
    assert _command(["probe", "core", "--config", "x.yaml"]) == "probe"
    assert _command(["-h"]) is None and _command([]) is None
    assert _command(["maintenance", "list"]) == "maintenance"
    assert _command(["nonsense"]) is None  # argparse then names the valid choices
    assert _command(["incidents", "run"]) == "incidents"


def test_a_one_shot_probe_imports_no_other_subcommand() -> None:
    """Checked in a fresh interpreter: building the parser for ``probe`` and parsing its line."""
    code = ("import sys; from monitor.cli import _parser, _command; argv = ['probe', 'core'];"
            " _parser(_command(argv)).parse_args(argv); print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=180)
    loaded = set(out.stdout.split())
    others = {module for _, module in _SUBCOMMANDS} - {"monitor.web.users"}  # (the inventory's API checks users)
    assert not loaded & others, loaded & others
    assert not {m for m in loaded if m.split(".")[0] in ("aiohttp", "aiomqtt", "jinja2", "prometheus_client")}


def test_help_still_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "monitor", "--help"], check=True, capture_output=True, text=True,
                         timeout=180)
    for name in _choices(_parser()):
        assert name in out.stdout
