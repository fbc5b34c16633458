"""The commented sample config (what `safehold init` writes) and the key reference (docs/config.md), both
written from the models' `Field(description=...)`, defaults and examples: a key added to a model appears
in both, with no second text to keep in step.

Regenerate the reference after changing a model:
    PYTHONPATH=src python3 -m safehold.config.sample > docs/config.md
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from safehold.config.base import SECRET_CHECK
from safehold.config.fields import keys, table_of, without_none
from safehold.config.loading import Config
from safehold.errors import ConfigError

WIDTH = 110  # comment lines are wrapped here
NAME = "NAME"  # a table name in the reference: [instances.NAME]
INTRO = """\
safehold configuration (every key: docs/config.md). Secrets are never written here: use "env:NAME" or
"file:/path" (mode 0600). A line starting with `# key =` shows the default or an example: remove the `#`
to set it."""
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(value: str, where: str) -> str:
    """`value` as a TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{where} is not UTF-8 text, which a TOML file cannot hold",
                          "rename the folder, or write the config by hand") from None
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(name: str) -> str:
    """A table or key name as TOML writes it: bare when it can be, else quoted."""
    return name if BARE_KEY.fullmatch(name) else toml_string(name, name)


def toml_value(value: Any, where: str) -> str:
    """A value on one line of TOML: strings, numbers, booleans, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value, where)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item, where) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{toml_key(k)} = {toml_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"{where}: no TOML form for {type(value).__name__}")


def default(field: FieldInfo) -> Any:
    """A field's default value (None when it has none, or is required)."""
    return None if field.is_required() else field.get_default(call_default_factory=True)


def shown(field: FieldInfo, where: str) -> Any:
    """The value the sample shows for a key not set: its example, else its default."""
    if field.examples:
        return field.examples[0]
    if (value := default(field)) is None:
        raise ValueError(f"{where} has neither a default nor an example to show: give it Field(examples=[...])")
    return value


def choices(annotation: Any) -> list[Any] | None:
    """The allowed values of a Literal key (or a list of Literals); None for any other type."""
    inner = without_none(annotation)
    if get_origin(inner) is list:
        inner = get_args(inner)[0]
    return list(get_args(inner)) if get_origin(inner) is Literal else None


def explain(field: FieldInfo, where: str) -> str:
    """A key's description, with what the sample line cannot show: required, the allowed values, the default
    when an example is shown instead."""
    text = field.description or ""
    if not text:
        raise ValueError(f"{where} has no description: give it Field(description=...)")
    if field.is_required():
        text += " (required)"
    if (allowed := choices(field.annotation)) is not None:
        text += "; one of: " + ", ".join(str(choice) for choice in allowed)
    if field.examples and default(field) not in (None, [], {}):
        text += f"; default: {toml_value(default(field), where)}"
    return text


class _Sample:
    """Writes the TOML lines of one sample (see `sample`)."""

    def __init__(self, notes: Mapping[str, str], fill: bool) -> None:
        self.notes, self.fill = notes, fill
        self.lines: list[str] = []

    def comment(self, text: str) -> None:
        for paragraph in text.splitlines():
            wrapped = textwrap.wrap(paragraph, WIDTH - 2, break_long_words=False, break_on_hyphens=False)
            self.lines.extend(f"# {line}".rstrip() for line in wrapped or [""])

    def note(self, path: str) -> None:
        if path in self.notes:
            self.comment(self.notes[path])

    def key(self, name: str, field: FieldInfo, path: str, given: Mapping[str, Any] | None) -> None:
        self.comment(explain(field, path))
        self.note(path)
        value = given[name] if given is not None and name in given else shown(field, path)
        prefix = "" if self.fill or (given is not None and name in given) else "# "
        items = [self.notes.get(f"{path}.{n}") for n in range(len(value))] if isinstance(value, list) else []
        if not any(items):
            self.lines.append(f"{prefix}{toml_key(name)} = {toml_value(value, path)}")
            return
        self.lines.append(f"{prefix}{toml_key(name)} = [")
        for item, remark in zip(value, items, strict=True):
            self.lines.append(f"{prefix}  {toml_value(item, path)}," + (f"   # {remark}" if remark else ""))
        self.lines.append(f"{prefix}]")

    def table(self, model: type[BaseModel], path: str, head: str, given: Mapping[str, Any] | None,
              header: str | None = None, about: str | None = None) -> None:
        """One table: its plain keys first (TOML puts them before any sub-table), then its sub-tables. `path`
        is the dotted path of notes, `head` the same in TOML (names quoted where needed)."""
        given = {} if given is None and self.fill else given
        if header is not None:
            self.lines.append("")
            self.comment(about or "")
            self.note(path)
            self.lines.append(header if given is not None else f"# {header}")
        fields = keys(model)
        for name, field in fields.items():
            if table_of(field) is None:
                self.key(name, field, _join(path, name), given)
        for name, field in fields.items():
            if (table := table_of(field)) is not None:
                self.tables(_join(path, name), _join(head, toml_key(name)), field, table,
                            given.get(name) if given is not None else None)

    def tables(self, path: str, head: str, field: FieldInfo, table: tuple[str, type[BaseModel]], given: Any) -> None:
        form, model = table
        if form == "table":
            self.table(model, path, head, given, f"[{head}]", field.description)
        elif form == "named":
            example = (field.json_schema_extra or {}).get("name_example", NAME)  # type: ignore[union-attr]
            for item, values in (given or {example: None}).items():
                item_head = f"{head}.{toml_key(item)}"
                self.table(model, f"{path}.{item}", item_head, values, f"[{item_head}]", field.description)
        else:
            for values in given or [None]:
                self.table(model, path, head, values, f"[[{head}]]", field.description)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def sample(values: Mapping[str, Any] | None = None, notes: Mapping[str, str] | None = None,
           fill: bool = False) -> str:
    """The commented TOML of a whole config.

    Keys and tables in `values` (nested as in the file) are written as set; every other key is written
    commented out with its default or example, under its description. `notes` adds comment lines above a
    key or table, by dotted path (`instances.web.quiesce`), or beside the N-th item of a list set in
    `values` (`instances.web.quiesce.stop.0`). `fill` writes every table and key as set, examples
    included: the config a test loads to prove every default and example valid.
    """
    writer = _Sample(notes or {}, fill)
    writer.comment(INTRO)
    writer.table(Config, "", "", values if values is not None else {})
    return "\n".join(writer.lines) + "\n"


def type_name(annotation: Any) -> str:
    """A type in words, for the reference."""
    inner = without_none(annotation)
    origin, args = get_origin(inner), get_args(inner)
    if origin is Annotated:
        return "secret reference" if SECRET_CHECK in inner.__metadata__ else type_name(args[0])
    if origin is Literal:
        return " or ".join(f"`{json.dumps(arg)}`" for arg in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"table of {type_name(args[1])}"
    if args:  # a union
        return " or ".join(type_name(arg) for arg in args if arg is not type(None))
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(inner, getattr(inner, "__name__", "?"))


def _reference_tables(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    for name, field in keys(model).items():
        if (table := table_of(field)) is not None:
            form, sub = table
            below = f"{path}.{name}".lstrip(".") + (f".{NAME}" if form == "named" else "")
            yield (f"[[{below}]]" if form == "array" else f"[{below}]"), sub
            yield from _reference_tables(sub, below)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference() -> str:
    """docs/config.md: every table and key of safehold.toml, with its type, default and description."""
    lines = ["# Configuration keys", "",
             "Generated from the models in `src/safehold/config/` by `PYTHONPATH=src python3 -m "
             "safehold.config.sample > docs/config.md`; do not edit by hand. `safehold init` writes the same keys "
             "as a commented sample. Secret references are `\"env:NAME\"` or `\"file:/path\"` (mode 0600), never "
             "the secret itself."]
    for header, model in _reference_tables(Config, ""):
        lines += ["", f"## `{header}`", "", (model.__doc__ or "").strip().replace("\n    ", " "), "",
                  "| key | type | default | description |", "|---|---|---|---|"]
        for name, field in keys(model).items():
            if table_of(field) is not None:
                continue
            value = "required" if field.is_required() else (
                "unset" if default(field) is None else f"`{toml_value(default(field), name)}`")
            example = f" Example: `{toml_value(field.examples[0], name)}`." if field.examples else ""
            kind = "secret reference" if SECRET_CHECK in field.metadata else type_name(field.annotation)
            lines.append(f"| `{name}` | {_cell(kind)} | {_cell(value)} | "
                         f"{_cell((field.description or '') + '.' + example)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
