"""The lexical half of the PHP reader (`appconfig.php`): PHP tokens and the evaluation of literal
expressions (strings with PHP's escapes, numbers, booleans, null, arrays, `.` concatenation, known
constants) over one statement's tokens.

Values are kept as the file's bytes, one character each (the file is decoded as latin-1), until
`decoded` turns a finished literal into UTF-8 text or `NotText`. What is not a literal raises
`NotLiteral` inside the evaluation and is kept as `Unparsed` with the kind of construct named by
`construct` in this module's own words, never with the file's text (it may hold a password).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

TOKEN = re.compile(r"""
  (?P<ws>\s+)
| (?P<comment>(?://|\#)[^\n]*?(?=\?>|\n|$)|/\*.*?\*/)
| (?P<close>\?>)
| (?P<heredoc><<<)
| (?P<sq>'(?:[^'\\]|\\.)*')
| (?P<dq>"(?:[^"\\]|\\.)*")
| (?P<var>\$[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)
| (?P<num>\d[\w.]*(?:[eE][+-]?\d+)?|\.\d[\d_]*(?:[eE][+-]?\d+)?)
| (?P<name>\\?[A-Za-z_\x80-\uffff][\w\x80-\uffff\\]*)
| (?P<op>=>|::|->|\?\?=?|\.=|[-+*/%|&^]=|===?|!==?|<=|>=|&&|\|\||\S)
""", re.X | re.S | re.A)  # ASCII \s and \w: PHP treats every byte >= 0x80 as a name byte
OPEN_TAG = re.compile(r"<\?(?:php\b|=)?", re.I)
DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "e": "\x1b", "f": "\f", "\\": "\\", "$": "$", '"': '"'}
OPENERS = {"(": ")", "[": "]", "{": "}"}
INTERPOLATION = re.compile(r"(?<!\\)(?:\\\\)*\$[A-Za-z_{]|(?<!\\)(?:\\\\)*\{\$")
# What an error may name of a construct: only words from these fixed lists, never text of the file.
BLOCKS = ("if", "elseif", "else", "switch", "match", "foreach", "for", "while", "do", "try", "catch", "finally",
          "function", "fn", "class", "namespace", "declare", "return", "include", "include_once", "require",
          "require_once", "global", "static", "unset", "list", "echo", "print")
KNOWN_FUNCTIONS = ("getenv", "file_get_contents", "trim", "rtrim", "ltrim", "base64_decode", "sprintf", "implode",
                   "str_replace", "parse_ini_file", "json_decode", "file", "dirname", "realpath", "constant",
                   "isset", "empty", "defined", "array_merge", "mysqli_connect", "ini_get", "php_uname", "gethostname")
SUPERGLOBALS = ("$_ENV", "$_SERVER", "$GLOBALS", "$_GET", "$_POST", "$_REQUEST", "$_COOKIE")
MAGIC_CONSTANTS = ("__DIR__", "__FILE__")  # case-insensitive in PHP, unlike other constants


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


@dataclass(frozen=True)
class Unparsed:
    """A value written as a PHP expression that is not a literal (never evaluated).

    `what` names the kind of construct in words of this module (never the file's text).
    """

    what: str
    line: int


@dataclass(frozen=True)
class NotText:
    """A string literal whose bytes are not UTF-8 (the value itself is not kept)."""

    line: int


class NotLiteral(Exception):
    """Internal: the expression at hand is not a literal."""


class SyntaxProblem(Exception):
    """Internal: the file uses syntax this reader cannot follow."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def tokens(text: str, start: int = 0, php: bool = False) -> Iterator[Token]:
    """PHP tokens of `text` (whitespace and comments dropped); a `?>` yields an implicit `;`."""
    pos = start
    line = text.count("\n", 0, start) + 1
    while pos < len(text):
        if not php:
            found = OPEN_TAG.search(text, pos)
            if found is None:
                return
            line += text.count("\n", pos, found.end())
            pos, php = found.end(), True
            continue
        match = TOKEN.match(text, pos)
        if match is None:  # only an unterminated string or comment fails to match
            raise SyntaxProblem("an unterminated string or comment", line)
        kind, value = match.lastgroup or "op", match.group()
        if kind == "op" and value in ("'", '"'):
            raise SyntaxProblem("an unterminated string", line)
        if kind == "op" and value == "/" and text.startswith("/*", pos):
            raise SyntaxProblem("an unterminated comment", line)
        if kind == "heredoc":
            raise SyntaxProblem("heredoc/nowdoc syntax (<<<), which safehold does not read", line)
        if kind == "close":
            yield Token("op", ";", line)
            php = False
        elif kind not in ("ws", "comment"):
            yield Token(kind, value, line)
        line += value.count("\n")
        pos = match.end()


def _single_quoted(body: str) -> str:
    return re.sub(r"\\([\\'])", r"\1", body)


def _double_quoted(body: str) -> str:
    """The bytes (one character each) of a double-quoted string body, escapes applied as PHP does."""
    if INTERPOLATION.search(body):
        raise NotLiteral  # variable interpolation
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\" or i + 1 == len(body):
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in DQ_ESCAPES:
            out.append(DQ_ESCAPES[nxt])
            i += 2
        elif m := re.match(r"[0-7]{1,3}", body[i + 1:]):
            out.append(chr(int(m.group(), 8) & 0xFF))
            i += 1 + len(m.group())
        elif m := re.match(r"x([0-9A-Fa-f]{1,2})", body[i + 1:]):
            out.append(chr(int(m.group(1), 16)))  # one byte, as PHP: "\xc3\xa9" is the UTF-8 of é
            i += 1 + len(m.group())
        elif m := re.match(r"u\{([0-9A-Fa-f]+)\}", body[i + 1:]):
            code = int(m.group(1), 16)
            if code > 0x10FFFF:
                raise NotLiteral  # PHP refuses the file
            out.append(chr(code).encode("utf-8", "surrogatepass").decode("latin-1"))  # PHP writes UTF-8
            i += 1 + len(m.group())
        else:
            out.append("\\" + nxt)
            i += 2
    return "".join(out)


def _number(text: str) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"0[0-7]+", clean):
            return int(clean, 8)
        return int(clean, 0)
    except ValueError:
        pass
    try:
        return float(clean)
    except ValueError:
        raise NotLiteral from None


def array_key(key: object) -> object:
    """PHP key casts: "8" → 8, true → 1, null → ""."""
    if isinstance(key, bool):
        return int(key)
    if key is None:
        return ""
    if isinstance(key, float):
        return int(key)
    if isinstance(key, str) and re.fullmatch(r"-?[1-9]\d*|0", key):
        return int(key)
    if isinstance(key, Unparsed | NotText | dict):
        raise NotLiteral
    return key


def _concat_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    if value is None:
        return ""
    if isinstance(value, dict | Unparsed | NotText):
        raise NotLiteral
    return str(value)


def name_text(raw: str) -> str:
    """A name (variable, key, constant) from the file's bytes as text; bytes that are not UTF-8 are replaced."""
    return raw.encode("latin-1").decode("utf-8", "replace")


def decoded(value: object, line: int) -> object:
    """A literal string value (the file's bytes, one character each) as text, or NotText."""
    if not isinstance(value, str):
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return NotText(line)


def construct(toks: list[Token]) -> str:
    """What kind of PHP construct `toks` is, in this module's own words (no token text of the file)."""
    # A word of the file is shown only when it is one of the fixed lists above.
    first = toks[0] if toks else None
    if first is not None and first.kind == "name" and first.text.lower() in BLOCKS:
        return f"code inside a PHP `{first.text.lower()}` statement"
    for index, tok in enumerate(toks):
        after = toks[index + 1] if index + 1 < len(toks) else None
        if tok.kind == "name" and after is not None and after.kind == "op" and after.text == "(":
            function = tok.text.lower().lstrip("\\")
            return f"a call to {function}()" if function in KNOWN_FUNCTIONS else "a function call"
        if tok.kind == "var":
            return f"the variable {tok.text}" if tok.text in SUPERGLOBALS else "another variable"
        if tok.kind == "dq" and INTERPOLATION.search(tok.text[1:-1]):
            return "a double-quoted string with a variable in it"
        if tok.kind == "name" and tok.text.lower().lstrip("\\") not in ("true", "false", "null", "array"):
            return "a constant or a keyword"
    return "an expression (operators or syntax beyond plain literals)"


class Parser:
    """Literal evaluation over the tokens of one statement; `known` holds the constants whose values
    are literal (the file's bytes, one character each, as every value while it is being built)."""

    def __init__(self, toks: list[Token], known: dict[str, object] | None = None) -> None:
        self.toks = toks
        self.pos = 0
        self.known = known or {}

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.toks[index] if index < len(self.toks) else None

    def take(self, text: str | None = None) -> Token:
        tok = self.peek()
        if tok is None or (text is not None and tok.text.lower() != text):
            raise NotLiteral
        self.pos += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.text in texts

    def value(self) -> object:
        """A literal expression, or Unparsed(source) spanning up to the next `,` `=>` or closer."""
        start = self.pos
        try:
            result = self.concat()
            if self.peek() is not None and not self.at(",", ")", "]", ";", "=>"):
                raise NotLiteral
            return decoded(result, self.toks[start].line)  # array items were decoded by their own value()
        except NotLiteral:
            self.pos = start
            return self.skip_expression()

    def skip_expression(self) -> Unparsed:
        start, depth = self.pos, 0
        while (tok := self.peek()) is not None:
            if tok.kind == "op" and tok.text in OPENERS:
                depth += 1
            elif tok.kind == "op" and tok.text in (")", "]", "}"):
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and tok.kind == "op" and tok.text in (",", "=>", ";"):
                break
            self.pos += 1
        if self.pos == start:
            raise SyntaxProblem("an empty expression", self.toks[start].line if start < len(self.toks) else 0)
        return Unparsed(construct(self.toks[start:self.pos]), self.toks[start].line)

    def concat(self) -> object:
        result = self.unary()
        if not self.at("."):
            return result
        parts = [_concat_text(result)]
        while self.at("."):
            self.take()
            parts.append(_concat_text(self.unary()))
        return "".join(parts)

    def unary(self) -> object:
        if self.at("-", "+"):
            sign = self.take().text
            operand = self.unary()
            if not isinstance(operand, int | float) or isinstance(operand, bool):
                raise NotLiteral
            return -operand if sign == "-" else operand
        if self.at("("):
            self.take()
            inner = self.concat()
            self.take(")")
            return inner
        return self.atom()

    def atom(self) -> object:
        tok = self.take()
        if tok.kind == "sq":
            return _single_quoted(tok.text[1:-1])
        if tok.kind == "dq":
            return _double_quoted(tok.text[1:-1])
        if tok.kind == "num":
            return _number(tok.text)
        if tok.kind == "name":
            word = tok.text.lower().lstrip("\\")
            if word in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[word]
            if word == "array" and self.at("("):
                self.take()
                return self.array(")")
            name = tok.text.lstrip("\\")
            for key in (name, name.upper() if name.upper() in MAGIC_CONSTANTS else None):  # magic ones: any case
                if key in self.known:
                    return self.known[key]
            raise NotLiteral
        if tok.kind == "op" and tok.text == "[":
            return self.array("]")
        raise NotLiteral

    def array(self, closer: str) -> dict[object, object]:
        result: dict[object, object] = {}
        next_index = 0
        while not self.at(closer):
            first = self.value()
            if self.at("=>"):
                self.take()
                key = array_key(first)
                item = self.value()
            else:
                key, item = next_index, first
            result[key] = item
            if isinstance(key, int):
                next_index = max(next_index, key + 1)
            if self.at(","):
                self.take()
            elif not self.at(closer):
                raise NotLiteral
        self.take(closer)
        return result
