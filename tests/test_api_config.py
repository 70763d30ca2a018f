"""The api: section: a valid one loads into typed settings; each mistake gets an exact message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.errors import ConfigError
from tests.api_support import ENV, LINK_KEY, TOKEN, api_section, load_with_api
from tests.delivery_support import load

#: a bcrypt hash (cost 4) of "correct horse battery", as `monitor users hash` prints one
HASH = "$2b$04$" + "a" * 22 + "b" * 31


def test_absent_means_no_api_and_no_links(tmp_path: Path) -> None:
    assert load(tmp_path, 2).api is None


def test_valid_section_with_secrets_as_references(tmp_path: Path) -> None:
    api = load_with_api(tmp_path, api_section(public_url="https://noc.isp.example/monitor/")).api
    assert api is not None and api.token is not None and api.link_key is not None
    assert api.listen == "127.0.0.1:9109" and api.link_ttl == 86_400.0  # default 24 h
    assert str(api.token) == "Secret(env:API_TOKEN)" and api.token.reveal() == TOKEN
    assert api.link_key.reveal() == LINK_KEY
    assert api.public_url == "https://noc.isp.example/monitor" and api.links  # no trailing '/'


def test_defaults_listen_on_loopback_and_links_are_optional(tmp_path: Path) -> None:
    api = load_with_api(tmp_path, {"token": {"env": "API_TOKEN"}, "link_ttl": "2h"}).api
    assert api is not None and api.listen == "127.0.0.1:9109" and api.link_ttl == 7200.0
    assert not api.links and api.link_key is None


def test_listen_off_needs_no_token(tmp_path: Path) -> None:
    api = load_with_api(tmp_path, {"listen": ""}).api
    assert api is not None and api.listen == "" and api.token is None


@pytest.mark.parametrize(("api", "message"), [
    (api_section(token=None), "api: missing required key 'token' (the API needs a bearer token; listen: '' turns "
                              "it off)"),
    (api_section(token="inline-t0ken-0123456789"),  # refused, and never echoed
     "api.token: secrets cannot be written inline; use {env: NAME}, {file: PATH} or {credential: NAME}"),
    (api_section(token={"env": "SMS_TOKEN"}),
     "api.token: the token from env:SMS_TOKEN is shorter than 16 characters (use a random one, e.g. python3 -c "
     "'import secrets; print(secrets.token_hex(24))')"),
    (api_section(link_key={"env": "MQTT_PASS"}),
     "api.link_key: the link_key from env:MQTT_PASS is shorter than 16 characters (use a random one, e.g. "
     "python3 -c 'import secrets; print(secrets.token_hex(24))')"),
    (api_section(token={"env": "NOPE"}), "api.token: environment variable NOPE is not set"),
    (api_section(listen=9109),
     "api.listen: expected a string such as 127.0.0.1:9109 ('' turns the API off), got an integer"),
    (api_section(listen="localhost"),
     "api.listen: bad listen address 'localhost' (expected HOST:PORT such as 127.0.0.1:9109, or '' to turn the "
     "API off)"),
    (api_section(listen="127.0.0.1:9108"),
     "api.listen: 127.0.0.1:9108 is already daemon.metrics_listen (give the API its own port)"),
    (api_section(public_url="noc.isp.example"),
     "api.public_url: bad URL 'noc.isp.example' (expected http://... or https://..., the address technicians "
     "open)"),
    (api_section(link_key=None), "api.public_url: ack links need link_key too (they are signed with it)"),
    (api_section(public_url=None), "api.link_key: signed ack links need public_url too (the base of each link)"),
    (api_section(listen=""), "api.public_url: ack links need the API listening (listen is '')"),
    (api_section(link_ttl=0), "api.link_ttl: must be greater than 0 and at most 30d, got 0"),
    (api_section(link_ttl="a day"),
     "api.link_ttl: bad duration 'a day' (expected seconds, or a string like '30s', '500ms', '2m', '1d')"),
    (api_section(secret={"env": "LINK_KEY"}),
     "api: unknown key 'secret' (allowed: link_key, link_ttl, listen, public_url, token, users)"),
    (api_section(users=[{"name": "Ana", "role": "operator", "password_hash": HASH}]),
     "api.users[0].name: bad user name 'Ana' (lower-case letters, digits, '.', '_', '-'; 32 at most)"),
    (api_section(users=[{"name": "ana", "role": "operator", "password_hash": HASH},
                        {"name": "ana", "role": "viewer", "password_hash": HASH}]),
     "api.users[1].name: user 'ana' is listed twice"),
    (api_section(users=[{"name": "ana", "role": "root", "password_hash": HASH}]),
     "api.users[0].role: unknown role 'root' (expected viewer, operator, admin)"),
    (api_section(users=[{"name": "ana", "role": "operator", "password_hash": "correct horse battery"}]),
     "api.users[0].password_hash: expected a bcrypt hash ($2b$12$ and 53 characters; `monitor users hash` prints "
     "one), not a password"),
    (api_section(users=[{"name": "ana", "role": "operator"}]), "api.users[0]: missing required key 'password_hash'"),
    (api_section(users={"ana": "operator"}), "api.users: expected a list, got a mapping"),
    ("on", "api: expected a mapping, got a string"),
])
def test_each_mistake_is_reported_with_its_key_path(tmp_path: Path, api: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_with_api(tmp_path, api)
    assert [p.split(": ", 1)[1] for p in err.value.problems] == [message]
    for value in (*ENV.values(), "inline-t0ken-0123456789", "correct horse battery"):
        assert value == "password" or value not in str(err.value)


def test_inline_token_is_refused_even_with_the_api_off(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_with_api(tmp_path, {"listen": "", "token": "inline-t0ken-0123456789"})
    assert "api.token: secrets cannot be written inline" in str(err.value)
    assert "inline-t0ken" not in str(err.value)
