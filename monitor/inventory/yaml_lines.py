"""Load YAML into plain dicts/lists that remember their line numbers, within fixed bounds.

Why: every inventory error must say ``file:line:``, and PyYAML's plain ``safe_load`` forgets where
things were. We compose the node graph with the safe loader (so tags and anchors behave as in
``safe_load``) and convert it ourselves, keeping the line of each mapping, key, value and list
item. Duplicate keys, which ``safe_load`` silently lets the last one win, are reported.

Why the bounds: the file is read at start and on every SIGHUP, on the daemon's event loop, so a
hostile or mangled file must fail fast with a line number rather than eat memory or the stack.
Anchors and ``<<`` merge keys are documented and used, so they are bounded rather than refused:
an alias that refers to its own anchor is refused where it is written, nesting is limited to
:data:`MAX_DEPTH`, and aliases may add at most :data:`ALIAS_FACTOR` times the nodes the file
itself writes (at least :data:`ALIAS_MIN`), which stops a "billion laughs" after a few thousand
nodes. Characters YAML forbids (NUL, other control characters) are reported with their line.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import yaml

MAX_DEPTH = 50  # a real inventory nests < 10 deep; Python's own stack gives out near 300 levels
ALIAS_FACTOR = 4  # aliases may add this many times the nodes written in the file ...
ALIAS_MIN = 10_000  # ... and at least this many (small files with a few shared blocks)
_MERGE_TAG = "tag:yaml.org,2002:merge"
# what the YAML 1.1 reader accepts (yaml.reader.Reader.NON_PRINTABLE): everything else is refused
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


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
    """The text is not valid YAML, breaks a rule plain YAML allows (duplicate keys), or a bound."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _line(node: yaml.Node | yaml.Event) -> int:
    mark = node.start_mark
    return 0 if mark is None else int(mark.line) + 1


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, composing at most MAX_DEPTH levels and no alias inside its own anchor."""

    def __init__(self, text: str, cancel: threading.Event | None = None) -> None:
        super().__init__(text)
        self.cancel = cancel  # set by a daemon that is stopping: a long parse ends at the next node
        self.depth = 0
        self.written = 0  # nodes written in the file (an alias writes none)
        self.open_anchors: set[str] = set()

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        """Refuse a '[' or '{' past MAX_DEPTH already while scanning.

        The scanner reads up to 1,024 characters ahead of the composer, and with every open
        bracket a possible simple key it re-checks on every token: ``nodes: [[[[…`` cost ~2 s of
        CPU (quadratic) before the composer's depth bound was reached; now ~51 tokens.
        """
        if self.flow_level >= MAX_DEPTH:
            raise YamlProblem(int(self.get_mark().line) + 1, f"nested more than {MAX_DEPTH} levels deep")
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            alias = self.peek_event()  # type: ignore[no-untyped-call]
            if alias.anchor in self.open_anchors:
                raise YamlProblem(_line(alias), f"alias *{alias.anchor} is inside its own anchor &{alias.anchor} "
                                                "(a recursive structure cannot be read)")
            return super().compose_node(parent, index)
        start = self.peek_event()  # type: ignore[no-untyped-call]
        if self.cancel is not None and self.cancel.is_set():
            raise YamlProblem(None, "reading stopped: the daemon is shutting down")
        self.depth += 1
        self.written += 1
        if self.depth > MAX_DEPTH:
            raise YamlProblem(_line(start), f"nested more than {MAX_DEPTH} levels deep")
        anchor = getattr(start, "anchor", None)
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.discard(anchor)


class _Converter:
    def __init__(self, loader: _BoundedLoader) -> None:
        self.loader = loader
        self.duplicates: list[YamlProblem] = []
        self.budget = max(ALIAS_MIN, ALIAS_FACTOR * loader.written)  # nodes aliases may still add
        self.converted: set[int] = set()

    def convert(self, node: yaml.Node, depth: int = 1) -> Any:
        if id(node) in self.converted:  # a second visit: an alias expanding
            self.budget -= 1
            if self.budget < 0:
                raise YamlProblem(_line(node), f"aliases repeat the anchor here too often (they may add at "
                                               f"most {ALIAS_FACTOR} times the values the file writes, and "
                                               f"at least {ALIAS_MIN})")
        self.converted.add(id(node))
        if depth > MAX_DEPTH:  # aliases to deep anchors inside deep places
            raise YamlProblem(_line(node), f"nested more than {MAX_DEPTH} levels deep (through aliases)")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode):
            seq = LList(_line(node))
            for item in node.value:
                seq.append(self.convert(item, depth + 1))
                seq.item_lines.append(_line(item))
            return seq
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, depth: int) -> LMap:
        """Own keys first, then ``<<`` merges fill keys not given (earlier merged mappings win)."""
        m = LMap(_line(node))
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.convert(key_node, depth + 1)
            if isinstance(key, LMap | LList):
                raise YamlProblem(_line(key_node), "a mapping key must be a plain value")
            if key in m:
                self.duplicates.append(YamlProblem(_line(key_node), f"duplicate key {key!r}"))
                continue
            m[key] = self.convert(value_node, depth + 1)
            m.key_lines[key] = _line(key_node)
            m.value_lines[key] = _line(value_node)
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                merged = self.convert(source, depth + 1)
                if not isinstance(merged, LMap):
                    raise YamlProblem(_line(source), "the merge key '<<' takes a mapping or a list of mappings")
                for key, value in merged.items():
                    if key not in m:
                        m[key] = value
                        m.key_lines[key] = merged.key_lines[key]
                        m.value_lines[key] = merged.value_lines[key]
        return m

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str) and (bad := _NON_PRINTABLE.search(value)):  # written as an escape: "\0"
                raise YamlProblem(_line(node), f"character U+{ord(bad.group()):04X} (from an escape such as "
                                               "\\0 or \\x07) is not allowed in a value")
            return value
        except (yaml.YAMLError, YamlProblem):
            raise
        except Exception as exc:  # PyYAML's constructors raise ValueError, TypeError, AttributeError
            kind = str(node.tag).rsplit(":", 1)[-1]
            shown = str(node.value)
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            why = f" ({str(exc).split(';')[0][:120]})" if isinstance(exc, ValueError) else ""
            raise YamlProblem(_line(node), f"bad {kind} value {shown!r}{why}") from exc


def _check_printable(text: str) -> None:
    bad = _NON_PRINTABLE.search(text)
    if bad is None:
        return
    line = text.count("\n", 0, bad.start()) + 1
    column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
    code = ord(bad.group())
    name = " (NUL)" if code == 0 else ""
    raise YamlProblem(line, f"character U+{code:04X}{name} at column {column} is not allowed in YAML "
                            "(control characters usually mean a damaged or binary file)")


def load(text: str, cancel: threading.Event | None = None) -> tuple[Any, list[YamlProblem]]:
    """Parse one YAML document into LMap/LList/scalars, plus the duplicate keys found.

    A syntax error, a forbidden character or a broken bound raises :class:`YamlProblem`;
    duplicate keys are returned (the first occurrence is kept) so the caller can go on validating
    and report them with everything else. An empty document gives ``None``.
    """
    _check_printable(text)
    loader = _BoundedLoader(text, cancel)
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
