"""YAML loading that remembers where every key and value came from.

pydantic reports errors by a path of keys; users need ``file:line:col``. We compose the YAML
node tree ourselves (PyYAML's ``SafeLoader``), build plain Python data from it, and keep a map
from each key path to the source position, so any error can be pointed at its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from gateway.errors import ConfigError

KeyPath: TypeAlias = tuple[str | int, ...]


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


class _Builder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.positions: dict[KeyPath, Position] = {}
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, key_path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # resolves YAML merge keys (<<)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
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
        return self.constructor.construct_object(node, deep=True)

    def _error(self, node: yaml.Node, message: str) -> ConfigError:
        pos = _position(node)
        return ConfigError([f"{self.path}:{pos.line}:{pos.column}: {message}"])


def load_yaml(path: Path) -> YamlDocument:
    """Read ``path`` into plain data with positions; syntax errors become ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from exc
    builder = _Builder(path)
    data = {} if root is None else builder.build(root, ())
    if root is not None:
        builder.positions[()] = _position(root)
    return YamlDocument(path=path, data=data, positions=builder.positions)
