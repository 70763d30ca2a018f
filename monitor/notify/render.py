"""Message texts from Jinja2 template files, per language, event and channel.

Templates are files (``templates/<lang>/<event>.<channel>.j2``) so an ISP can reword them without
touching code: a ``templates_dir`` given in the config is searched first. Email and ticket
templates start with a ``Subject:`` line and a blank line; SMS templates are the body only. A
language without a template falls back to Spanish (the default of the seed's customers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from monitor.errors import ConfigError
from monitor.zones import zone_words

BUILTIN = Path(__file__).parent / "templates"
FALLBACK = "es"


def _hours(value: float) -> str:
    return f"{value:g}"


class Renderer:
    def __init__(self, extra_dir: str | None = None) -> None:
        paths = [extra_dir, str(BUILTIN)] if extra_dir else [str(BUILTIN)]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(paths), undefined=jinja2.StrictUndefined, autoescape=False,
            keep_trailing_newline=True, trim_blocks=False,
        )
        self.env.filters["hours"] = _hours
        self.env.filters["zone"] = zone_words  # {{ timezone|zone("es") }}: "hora de Colombia"
        self._cache: dict[tuple[str, str, str], jinja2.Template] = {}

    def template(self, event: str, channel: str, language: str) -> jinja2.Template:
        key = (event, channel, language)
        t = self._cache.get(key)
        if t is None:
            try:
                t = self.env.get_template(f"{language}/{event}.{channel}.j2")
            except jinja2.TemplateNotFound:
                try:
                    t = self.env.get_template(f"{FALLBACK}/{event}.{channel}.j2")
                except jinja2.TemplateNotFound as exc:
                    raise ConfigError(f"no template for {event} on {channel} (looked in {language} and "
                                      f"{FALLBACK})") from exc
            self._cache[key] = t
        return t

    def render(self, event: str, channel: str, language: str, data: dict[str, Any]) -> tuple[str, str]:
        """(subject, body); the subject is "" for channels without one (SMS)."""
        try:
            text = self.template(event, channel, language).render(data)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template {language}/{event}.{channel}.j2 failed: {exc}") from exc
        if text.startswith("Subject:"):
            first, _, body = text.partition("\n")
            return first.removeprefix("Subject:").strip(), body.lstrip("\n")
        return "", text.strip()
