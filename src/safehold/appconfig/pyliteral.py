"""Read a Python configuration module (NetBox's `configuration.py`) without executing it.

The file is usually writable by the application's user; importing it as root would run whatever
it holds. So it is parsed with `ast` and only literal values are taken: strings, bytes, numbers,
booleans, None, and dicts/lists/tuples/sets built of them, in top-level `NAME = …` assignments
(also annotated ones, and `NAME['key'] = …` on a dict assigned before). The last assignment wins,
as when Python runs the module.

A value that is not a literal (`os.environ.get('DB_PASSWORD')`, `BASE_DIR / 'media'`, an f-string,
an assignment inside an `if` or `try` block) is kept as `NotLiteral`, and reading it raises a
ConfigError naming the file, the line and the key path with the kind of construct, never its text
(the expression next to a key may hold a password). A dict whose keys are literals keeps its
literal members readable even when one member is not.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.errors import ConfigError

HINT = ("safehold reads Python config files as plain literals and never runs them; write the value as a quoted "
        "literal, or declare it in safehold.toml")
CONSTRUCTS = {
    ast.Call: "a function call", ast.Name: "a variable", ast.Attribute: "an attribute", ast.BinOp: "an expression",
    ast.BoolOp: "an expression", ast.Compare: "a comparison", ast.IfExp: "a conditional expression",
    ast.JoinedStr: "an f-string", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension", ast.DictComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.GeneratorExp: "a comprehension", ast.Starred: "an unpacking",
}
BLOCKS = {ast.If: "an if block", ast.Try: "a try block", ast.With: "a with block", ast.For: "a for loop",
          ast.While: "a while loop"}


@dataclass(frozen=True)
class NotLiteral:
    """A value written as a Python expression that is not a literal (never evaluated)."""

    what: str
    line: int


def _literal(node: ast.expr) -> object:
    """The value of a literal node; a non-literal part becomes NotLiteral (dict members one by one)."""
    if isinstance(node, ast.Dict):
        result: dict[object, object] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # `**other`
                return NotLiteral("a dict unpacking", node.lineno)
            name = _literal(key)
            if isinstance(name, (NotLiteral, dict, list, set)):
                return NotLiteral("a dict with a computed key", node.lineno)
            result[name] = _literal(value)
        return result
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(item) for item in node.elts]
        if isinstance(node, ast.Set):
            if any(isinstance(item, NotLiteral) for item in items):
                return NotLiteral("a set with a computed member", node.lineno)
            return set(items)  # type: ignore[arg-type]
        return items if isinstance(node, ast.List) else tuple(items)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NotLiteral(CONSTRUCTS.get(type(node), "an expression"), node.lineno)


@dataclass
class PyConfig:
    """The top-level literal settings of one Python config file."""

    path: Path
    label: str = "config file"
    values: dict[str, object] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        """Whether the file assigns `name` at all (literal or not)."""
        return name in self.values

    def get(self, name: str, *keys: object, default: object = ConfigError) -> Any:
        """`NAME[key1][key2]…`; a missing one is `default` (or an error), a non-literal one always an error."""
        value: object = self.values.get(name, _MISSING)
        path = name
        for key in keys:
            if isinstance(value, NotLiteral):
                break
            if not isinstance(value, dict) or key not in value:
                value = _MISSING
                break
            value, path = value[key], f"{path}[{key!r}]"
        if isinstance(value, NotLiteral):
            raise ConfigError(f"{self.label} {self.path} line {value.line}: {path} is set with {value.what}, "
                              "not a literal value", HINT)
        if value is _MISSING:
            if default is ConfigError:
                where = name + "".join(f"[{key!r}]" for key in keys)
                raise ConfigError(f"{self.label} {self.path} does not set {where}",
                                  f"set {where} in {self.path.name}, or fix the instance's root")
            return default
        return value

    def text(self, name: str, *keys: object, default: object = ConfigError) -> Any:
        """Like `get`, for a value that must be text (numbers are turned into text, None into '')."""
        value = self.get(name, *keys, default=_MISSING)
        if value is _MISSING:
            return self.get(name, *keys, default=default)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            where = name + "".join(f"[{key!r}]" for key in keys)
            raise ConfigError(f"{self.label} {self.path}: {where} is not text", HINT)
        return str(value)


_MISSING: Any = object()  # not a NotLiteral: "not set" is told apart from "not a literal"


def _assign(config: PyConfig, target: ast.expr, value: object) -> None:
    if isinstance(target, ast.Name):
        config.values[target.id] = value
        return
    if isinstance(target, ast.Subscript):
        keys: list[object] = []
        node: ast.expr = target
        while isinstance(node, ast.Subscript):
            keys.insert(0, _literal(node.slice))
            node = node.value
        if not isinstance(node, ast.Name):
            return
        holder = config.values.get(node.id)
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None  # type: ignore[arg-type]
        if isinstance(holder, dict) and not isinstance(keys[-1], NotLiteral):
            holder[keys[-1]] = value
        elif node.id in config.values:
            config.values[node.id] = NotLiteral("an item assignment safehold cannot follow", target.lineno)
        return
    for name in _names(target):  # `A, B = …`
        config.values[name] = NotLiteral("a tuple assignment", target.lineno)


def _names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def parse_text(text: str | bytes, path: Path, label: str = "config file") -> PyConfig:
    """Parse a Python module's text (never run); a syntax error refuses the whole file."""
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"{label} {path} is not valid Python{f' (line {line})' if line else ''}",
                          "fix the file; the application cannot load it either") from None
    config = PyConfig(path, label)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            value = _literal(stmt.value)
            for target in stmt.targets:
                _assign(config, target, value)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            _assign(config, stmt.target, _literal(stmt.value))
        elif isinstance(stmt, ast.AugAssign):
            for name in _names(stmt.target):
                config.values[name] = NotLiteral("an augmented assignment", stmt.lineno)
        elif type(stmt) in BLOCKS or isinstance(stmt, ast.TryStar):
            for name in _names(stmt):
                config.values[name] = NotLiteral(f"an assignment inside {BLOCKS.get(type(stmt), 'a try block')}",
                                                 stmt.lineno)
    return config


def parse_file(path: Path, label: str = "config file") -> PyConfig:
    """Read and parse `path`; an unreadable file is a ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {label} {path}: {exc.strerror}", "check the path and its permissions") from None
    return parse_text(data, path, label)
