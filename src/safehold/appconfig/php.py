"""Read PHP configuration files without running PHP.

The config files of ITFlow (`config.php`), i-doit (`src/config.inc.php`) and iTop
(`conf/production/config-itop.php`) are usually writable by the web server user. Executing them
as root would hand root to whoever controls the web application, so safehold never runs `php` on
them: it tokenizes the file and evaluates only literal values (strings, numbers, booleans, null,
arrays and `.` concatenation of literals) in top-level assignments and `define()` calls. Constants
whose value is known without running anything count as literals: those the file `define()`d
earlier with a literal, `__DIR__`/`__FILE__` (the file's own place, e.g.
`$config_backup_path = __DIR__ . '/../backups'`), `DIRECTORY_SEPARATOR` and `PHP_EOL`.

Anything else (a function call such as `getenv('DB_PASS')`, a variable inside a double-quoted
string, an `if` block that assigns) is kept as `Unparsed`; reading such a value raises a
ConfigError that names the file, the line, the variable and the kind of construct. Messages never
quote the file's text: the expression next to a host may hold the password (`if (…) { $dbhost =
'db2'; $dbpassword = '…'; }`), so no token of it is ever shown. Syntax this module cannot follow
(heredoc, an unterminated string or comment) makes the whole file refused.

PHP strings are byte strings: the file is read as bytes (latin-1, one character per byte) so that
escapes such as "\xc3\xa9" and raw bytes give exactly the bytes PHP would hand to the database.
Each value is then decoded as UTF-8; one that is not UTF-8 (a latin-1 file, a "\xe9" escape) is
kept as `NotText` and refused when read, because the MariaDB client library takes credentials as
UTF-8 text and could not send those bytes.
"""


from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.appconfig.phpliterals import (
    OPENERS,
    NotLiteral,
    NotText,
    Parser,
    SyntaxProblem,
    Token,
    Unparsed,
    array_key,
    construct,
    decoded,
    name_text,
    tokens,
)
from safehold.errors import ConfigError

__all__ = ["NotText", "PhpFile", "Unparsed", "find_define", "parse_file", "parse_text"]

HINT = ("safehold reads PHP config files as plain literals and never runs PHP; write the value as a quoted "
        "literal, or declare the database in safehold.toml")
NOT_TEXT_HINT = ("PHP would send those bytes as they are, but the MariaDB client library safehold uses takes "
                 "credentials only as UTF-8: save the file as UTF-8 (PHP then sends the UTF-8 bytes; change the "
                 "account's password to match), or use a password of UTF-8 text")

@dataclass
class PhpFile:
    """Literal top-level variables and constants of one PHP file."""

    path: Path
    variables: dict[str, object] = field(default_factory=dict)
    constants: dict[str, object] = field(default_factory=dict)
    # Literal property defaults of top-level classes (GLPI's `class DB extends DBmysql { public $dbhost = …; }`).
    classes: dict[str, dict[str, object]] = field(default_factory=dict)

    def get(self, var: str, *keys: object, default: object = ConfigError) -> Any:
        """`$var[key1][key2]…`; a missing value returns `default` or raises, an expression always raises."""
        label = "$" + var + "".join(f"[{k!r}]" for k in keys)
        value: object = self.variables.get(var, ConfigError)
        for key in keys:
            if isinstance(value, Unparsed):
                break
            value = value.get(key, ConfigError) if isinstance(value, dict) else ConfigError
        if isinstance(value, Unparsed | NotText):
            raise _refusal(self.path, label, value)
        if value is ConfigError:
            if default is ConfigError:
                raise ConfigError(f"{self.path}: {label} is not set", "is this the application's config file?")
            return default
        return value

    def text(self, var: str, *keys: object, default: object = ConfigError) -> Any:
        """Like `get`, but the value must be a string or number (returned as text)."""
        value = self.get(var, *keys, default=default)
        if value is default and default is not ConfigError:
            return value
        if isinstance(value, dict | bool):
            label = "$" + var + "".join(f"[{k!r}]" for k in keys)
            raise ConfigError(f"{self.path}: {label} is not a text value", "fix the application's config file")
        return "" if value is None else str(value)

    def property(self, cls: str, name: str, default: object = ConfigError) -> Any:
        """The default value of `cls::$name` as the class body declares it; an expression always raises."""
        value = self.classes.get(cls, {}).get(name, ConfigError)
        if isinstance(value, Unparsed | NotText):
            raise _refusal(self.path, f"{cls}::${name}", value)
        if value is ConfigError:
            if default is ConfigError:
                raise ConfigError(f"{self.path}: {cls}::${name} is not set", "is this the application's config file?")
            return default
        return value

    def constant(self, name: str) -> object:
        """A `define()`d constant, or None."""
        value = self.constants.get(name)
        if isinstance(value, Unparsed | NotText):
            raise _refusal(self.path, f"constant {name}", value)
        return value


def _refusal(path: Path, label: str, value: Unparsed | NotText) -> ConfigError:
    """Why a value cannot be used: file, line, variable and construct, never the file's text (it may hold
    the password, even when the variable at hand is the host)."""
    if isinstance(value, NotText):
        return ConfigError(f"{path}, line {value.line}: {label} is a string whose bytes are not UTF-8 text",
                           NOT_TEXT_HINT)
    return ConfigError(f"{path}, line {value.line}: {label} is set by {value.what}, which safehold does not "
                       "evaluate", HINT)


def _statements(toks: Iterator[Token]) -> Iterator[list[Token]]:
    """Top-level statements: split at `;` outside brackets and after a closing `}` at depth 0."""
    current: list[Token] = []
    depth = 0
    for tok in toks:
        if tok.kind == "op" and tok.text in OPENERS:
            depth += 1
        elif tok.kind == "op" and tok.text in (")", "]", "}"):
            depth = max(depth - 1, 0)
        if depth == 0 and tok.kind == "op" and tok.text == ";":
            if current:
                yield current
            current = []
            continue
        current.append(tok)
        if depth == 0 and tok.kind == "op" and tok.text == "}":
            yield current
            current = []
    if current:
        yield current


def _assign_nested(php: PhpFile, var: str, keys: list[object], value: object, line: int) -> None:
    if not keys:
        php.variables[var] = value
        return
    target = php.variables.setdefault(var, {})
    if not isinstance(target, dict):
        php.variables[var] = Unparsed("a keyed assignment to a variable that is not an array", line)
        return
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            php.variables[var] = Unparsed("a keyed assignment to a variable that is not an array", line)
            return
    target[keys[-1]] = value


def _bytes_text(value: object) -> object:
    """A decoded value back in the parser's form (the bytes, one character each)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    if isinstance(value, dict):
        return {_bytes_text(k): _bytes_text(v) for k, v in value.items()}
    return value


def _known_constants(php: PhpFile) -> dict[str, object]:
    """Constants a statement may use as literals: the magic ones of this file and its literal define()s."""
    real = php.path.resolve()
    magic = {"__DIR__": str(real.parent), "__FILE__": str(real), "DIRECTORY_SEPARATOR": "/", "PHP_EOL": "\n"}
    own = {name: value for name, value in php.constants.items() if not isinstance(value, Unparsed | NotText)}
    return {name: _bytes_text(value) for name, value in {**magic, **own}.items()}


MODIFIERS = ("public", "protected", "private", "var", "static", "readonly")


def _class(php: PhpFile, stmt: list[Token]) -> None:
    """`class NAME [extends X] [implements Y] { [modifiers] [type] $prop = literal; … }`: the property defaults.
    Anything else in the body (methods, constants) is skipped; a property set by an expression is Unparsed."""
    if len(stmt) < 3 or stmt[1].kind != "name" or stmt[-1].text != "}":
        return
    start = next((i for i, tok in enumerate(stmt) if tok.kind == "op" and tok.text == "{"), None)
    if start is None:
        return
    properties = php.classes.setdefault(name_text(stmt[1].text), {})
    for member in _statements(iter(stmt[start + 1:-1])):
        index = 0
        while index < len(member) and member[index].kind == "name" and member[index].text.lower() in MODIFIERS:
            index += 1
        if index == 0:
            continue  # a method, constant or `use`: not a property declaration
        if index < len(member) and member[index].kind in ("name", "op") and member[index].text not in ("=", ";"):
            index += member[index].kind == "name" or member[index].text == "?"  # a type (`?string`, `int`)
            index += index < len(member) and member[index].kind == "name"
        if index >= len(member) or member[index].kind != "var":
            continue
        name = name_text(member[index].text[1:])
        rest = member[index + 1:]
        if not rest:
            properties[name] = None
            continue
        parser = Parser(rest, _known_constants(php))
        try:
            parser.take("=")
            value = parser.value()
            if parser.peek() is None:
                properties[name] = value
                continue
        except NotLiteral:
            pass
        properties[name] = Unparsed(construct(rest[1:]), member[index].line)


def _statement(php: PhpFile, stmt: list[Token]) -> None:
    head = stmt[0]
    if head.kind == "name" and head.text.lower() in ("class", "final", "abstract"):
        _class(php, stmt[1:] if head.text.lower() != "class" else stmt)
        return
    parser = Parser(stmt, _known_constants(php))
    if head.kind == "var":
        parser.take()
        keys: list[object] = []
        try:
            while parser.at("["):
                parser.take()
                keys.append(array_key(decoded(parser.concat(), head.line)))
                parser.take("]")
            if parser.at("="):
                parser.take()
                value = parser.value()
                if parser.peek() is None:
                    _assign_nested(php, name_text(head.text[1:]), keys, value, head.line)
                    return
        except NotLiteral:
            pass
    elif head.kind == "name" and head.text.lower() == "define":
        try:
            parser.take()
            parser.take("(")
            name = parser.atom()
            parser.take(",")
            value = parser.value()
            parser.take(")")
            if isinstance(name, str) and parser.peek() is None:
                php.constants[name_text(name)] = value
                return
        except NotLiteral:
            pass
    # Not a literal assignment: whatever it may change must not be trusted (`$a = f()`, `$a[] = …`,
    # `$a .= …`, assignments inside an `if` block).
    if head.kind == "var":
        php.variables[name_text(head.text[1:])] = Unparsed(_statement_construct(stmt), head.line)
    for index, tok in enumerate(stmt[:-1]):
        after = stmt[index + 1]
        if tok.kind == "var" and after.kind == "op" and after.text.endswith("=") \
                and after.text not in ("==", "===", "!=", "!==", "<=", ">=", "=>"):
            php.variables[name_text(tok.text[1:])] = Unparsed(_statement_construct(stmt), tok.line)


def _statement_construct(stmt: list[Token]) -> str:
    """What kind of statement assigns a value that is not a plain literal (in this module's words)."""
    ops = [t.text if t.kind == "op" else "" for t in stmt[1:3]]
    if stmt[0].kind == "var" and ops[:2] == ["[", "]"]:
        return "an append (`$name[] = …`)"
    if stmt[0].kind == "var" and ops and ops[0].endswith("=") and ops[0] not in ("=", "==", "===", "=>"):
        return "a compound assignment (`.=`, `+=`, `??=` …)"
    if stmt[0].kind == "var" and ops and ops[0] == "=":
        return construct(stmt[2:])
    return construct(stmt[1:] if stmt[0].kind == "var" else stmt)


def parse_text(text: str | bytes, path: Path) -> PhpFile:
    """Literal variables and constants of PHP source `text` (bytes, or str meaning its UTF-8 bytes)
    read from `path` (for messages)."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    text = text.decode("latin-1")  # one character per byte: PHP strings are byte strings
    php = PhpFile(path)
    try:
        for stmt in _statements(tokens(text)):
            _statement(php, stmt)
    except SyntaxProblem as exc:
        raise ConfigError(f"{path}: line {exc.line} uses {exc}, so safehold cannot read the file", HINT) from None
    return php


def parse_file(path: Path, what: str = "config file") -> PhpFile:
    """Read and parse a PHP file; a missing or unreadable file is a ConfigError naming `what`."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist", "check the instance's root in safehold.toml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}", "check its permissions") from None
    return parse_text(text, path)


def find_define(path: Path, name: str) -> str | None:
    """The literal value of `define('NAME', ...)` in any PHP file (e.g. a class file), or None.

    Only the tokens right after the matching `define(` are read, so the rest of a large source
    file never has to be parseable.
    """
    try:
        text = path.read_bytes().decode("latin-1")  # one character per byte, as parse_text
    except OSError:
        return None
    pattern = re.compile(r"\bdefine\s*\(\s*(['\"])" + re.escape(name) + r"\1\s*,", re.I)
    match = pattern.search(text)
    if match is None:
        return None
    collected: list[Token] = []
    try:
        for tok in tokens(text, match.end(), php=True):
            if tok.kind == "op" and tok.text in (")", ";"):
                break
            collected.append(tok)
    except SyntaxProblem:
        return None
    parser = Parser(collected)
    value = parser.value()
    if isinstance(value, Unparsed | NotText | dict) or value is None:
        return None
    return str(value)
