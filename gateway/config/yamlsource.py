"""YAML loading that remembers where every key and value came from.

pydantic reports errors by a path of keys; users need ``file:line:col``. We compose the YAML
node tree ourselves (PyYAML's ``SafeLoader``), build plain Python data from it, and keep a map
from each key path to the source position, so any error can be pointed at its line.

YAML 1.1 (PyYAML's resolver) reads some plain scalars as something other than what was written:
``00000001`` as the octal number 1, ``off`` as false, ``1:30`` as 90. A ``NameRule`` tells the
builder which places hold names (a thing name, device names): a plain scalar there is read as
its text. The text and resolved tag of every other plain scalar are kept (``plain``), so the
config can refuse the forms that silently change a number (``gateway.config.yaml11``).

Loading is bounded before any data is built: the file's size (``MAX_YAML_BYTES``), the nesting
depth (``MAX_DEPTH``) and the number of values the document stands for once every alias is
expanded (``MAX_NODES``). An alias is a reference, so a few hundred bytes can stand for billions
of values ("billion laughs"); the composer adds up each node's expanded size as it goes and stops
at the first node over the bound, naming its line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent

from gateway.errors import ConfigError

KeyPath: TypeAlias = tuple[str | int, ...]
# (key path, is_key) -> whether a plain scalar there is a name, read as its text. For a key the
# path is the mapping's own.
NameRule: TypeAlias = Callable[[KeyPath, bool], bool]

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"

MAX_YAML_BYTES = 1024 * 1024  # a gateway config is a few KB
MAX_DEPTH = 64  # the config schema is 4-5 levels deep
MAX_NODES = 100_000  # values once aliases are expanded: ~100x a large config


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class YamlDocument:
    """Plain data from one YAML file plus the position of every key path in it."""

    path: Path
    data: Any
    positions: dict[KeyPath, Position]
    # key path -> (text, resolved tag) of each plain (unquoted) scalar value not read as a name
    plain: dict[KeyPath, tuple[str, str]] = field(default_factory=dict)

    def position_of(self, key_path: KeyPath) -> Position:
        """The position of ``key_path``, or of its nearest ancestor that exists in the file."""
        for end in range(len(key_path), -1, -1):
            found = self.positions.get(key_path[:end])
            if found is not None:
                return found
        return Position(1, 1)

    def locate(self, key_path: KeyPath) -> str:
        pos = self.position_of(key_path)
        return f"{self.path}:{pos.line}:{pos.column}"


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer refuses documents nested deeper than ``MAX_DEPTH``, aliases
    pointing into their own node (a cycle), and nodes standing for more than ``MAX_NODES``
    values once aliases are expanded.

    ``expanded[id(node)]`` is a node's size with every alias expanded, known as soon as the node
    is composed (children first); an alias adds its target's size without copying anything. The
    nodes stay alive in the tree while this loader exists, so no id is reused meanwhile.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.expanded: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark  # yaml.error.Mark here (the pure-Python loader)
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            # The composer registers an anchor before composing the node's children: an alias
            # to a node whose size is not known yet points into that node.
            if target is not None and id(target) not in self.expanded:
                raise ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} refers to the node that contains it",
                    mark,
                )
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        assert node is not None  # None only at a document's end, never inside one
        size = 1 + sum(self.expanded[id(child)] for child in _children(node))
        if size > MAX_NODES:
            raise ComposerError(
                None,
                None,
                f"its aliases expand to more than {MAX_NODES} values (expected a config, "
                "not an alias bomb)",
                node.start_mark,
            )
        self.expanded[id(node)] = size
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _read_bounded(path: Path) -> str:
    """The file's text; its size is checked before reading, and the read is bounded too (a FIFO
    or a device reports no size)."""
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_YAML_BYTES:
                raise ConfigError(
                    [f"{path}: file is {size} bytes, more than the {MAX_YAML_BYTES} allowed"]
                )
            data = stream.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from exc
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError([f"{path}: file is more than the {MAX_YAML_BYTES} bytes allowed"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {exc.start}): expected a YAML config"]
        ) from exc


def _never(key_path: KeyPath, is_key: bool) -> bool:
    return False


class _Builder:
    def __init__(self, path: Path, names: NameRule = _never) -> None:
        self.path = path
        self.names = names
        self.positions: dict[KeyPath, Position] = {}
        self.plain: dict[KeyPath, tuple[str, str]] = {}
        self.constructor = yaml.SafeLoader("")

    def _as_name(self, node: yaml.Node, key_path: KeyPath, is_key: bool) -> bool:
        """A plain scalar YAML 1.1 would read as something other than text, at a name's place."""
        return (
            isinstance(node, yaml.ScalarNode)
            and node.style is None
            and node.tag not in (STR_TAG, NULL_TAG)
            and self.names(key_path, is_key)
        )

    def build(self, node: yaml.Node, key_path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # resolves YAML merge keys (<<)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                as_name = self._as_name(key_node, key_path, True)
                key = key_node.value if as_name else self._construct(key_node)
                if not isinstance(key, str | int | bool | float) or key is None:
                    raise self._error(key_node, f"mapping keys must be plain scalars, got {key!r}")
                if key in result:
                    raise self._error(key_node, f"duplicate key {key!r}")
                child: KeyPath = (*key_path, key if isinstance(key, str | int) else str(key))
                # A key's position is where the key is written, which is what users look for.
                self.positions[child] = _position(key_node)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item_node in enumerate(node.value):
                child = (*key_path, index)
                self.positions[child] = _position(item_node)
                items.append(self.build(item_node, child))
            return items
        if self._as_name(node, key_path, False):
            return node.value
        if isinstance(node, yaml.ScalarNode) and node.style is None:
            self.plain[key_path] = (node.value, node.tag)
        return self._construct(node)

    def _construct(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self._error(node, f"invalid YAML: {exc.problem or exc}") from exc
        except (ValueError, OverflowError) as exc:
            # int() beyond 4300 digits, a date like 2024-13-45: a value no config can hold
            raise self._error(node, f"cannot read this value: {exc}") from exc

    def _error(self, node: yaml.Node, message: str) -> ConfigError:
        pos = _position(node)
        return ConfigError([f"{self.path}:{pos.line}:{pos.column}: {message}"])


def load_yaml(path: Path, names: NameRule = _never) -> YamlDocument:
    """Read ``path`` into plain data with positions; syntax errors, an oversized file and an
    alias bomb become ``ConfigError``. Plain scalars where ``names`` says a name goes are read
    as their text."""
    text = _read_bounded(path)
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from exc
    builder = _Builder(path, names)
    data = {} if root is None else builder.build(root, ())
    if root is not None:
        builder.positions[()] = _position(root)
    return YamlDocument(path=path, data=data, positions=builder.positions, plain=builder.plain)
