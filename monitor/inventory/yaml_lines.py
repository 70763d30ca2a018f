"""Load YAML into plain dicts/lists that remember their line numbers.

Why: every inventory error must say ``file:line:``, and PyYAML's plain ``safe_load`` forgets where
things were. We compose the node graph with the safe loader (so tags, anchors and merge keys behave
exactly as in ``safe_load``) and convert it ourselves, keeping the line of each mapping, key, value
and list item. Duplicate keys, which ``safe_load`` silently lets the last one win, are reported.
"""

from __future__ import annotations

from typing import Any

import yaml


class LMap(dict[Any, Any]):
    """A YAML mapping: a dict plus the 1-based line of itself, of each key and of each value."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class LList(list[Any]):
    """A YAML sequence: a list plus the 1-based line of itself and of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class YamlProblem(Exception):
    """The text is not valid YAML, or breaks a rule plain YAML allows (duplicate keys)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Converter:
    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.duplicates: list[YamlProblem] = []

    def convert(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
            m = LMap(_line(node))
            for key_node, value_node in node.value:
                key = self.convert(key_node)
                if isinstance(key, LMap | LList):
                    raise YamlProblem(_line(key_node), "a mapping key must be a plain value")
                if key in m:
                    self.duplicates.append(YamlProblem(_line(key_node), f"duplicate key {key!r}"))
                    continue
                m[key] = self.convert(value_node)
                m.key_lines[key] = _line(key_node)
                m.value_lines[key] = _line(value_node)
            return m
        if isinstance(node, yaml.SequenceNode):
            seq = LList(_line(node))
            for item in node.value:
                seq.append(self.convert(item))
                seq.item_lines.append(_line(item))
            return seq
        return self.loader.construct_object(node, deep=True)


def load(text: str) -> tuple[Any, list[YamlProblem]]:
    """Parse one YAML document into LMap/LList/scalars, plus the duplicate keys found.

    A syntax error raises :class:`YamlProblem`; duplicate keys are returned (the first occurrence
    is kept) so the caller can go on validating and report them with everything else. An empty
    document gives ``None``.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, []
        conv = _Converter(loader)
        data = conv.convert(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = None if mark is None else int(mark.line) + 1
        detail = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            detail = f"{exc.problem} ({exc.context})"
        raise YamlProblem(where, f"YAML syntax error: {detail}") from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(None, f"YAML error: {exc}") from exc
    finally:
        loader.dispose()
    return data, conv.duplicates
