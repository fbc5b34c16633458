"""How the config models nest: which fields are tables, and which field a key path names.

Shared by the sample writer (`sample.py`) and the loader's error messages (`loading.py`), so both
read a key's meaning from the same `Field(description=...)`.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

TableForm = Literal["table", "named", "array"]  # [a.b], [a.b.NAME] (a dict of tables), [[a.b]] (a list of tables)


def without_none(annotation: Any) -> Any:
    """`X | None` → X; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def table_of(field: FieldInfo) -> tuple[TableForm, type[BaseModel]] | None:
    """The form and model of a field that holds tables; None for a plain key."""
    inner = without_none(field.annotation)
    if (model := _model(inner)) is not None:
        return "table", model
    args = get_args(inner)
    if get_origin(inner) is dict and (model := _model(args[1])) is not None:
        return "named", model
    if get_origin(inner) is list and (model := _model(args[0])) is not None:
        return "array", model
    return None


def keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The keys a file may set in a table of `model`, in the order the model declares them."""
    return {name: field for name, field in model.model_fields.items() if not field.exclude}


def locate(model: type[BaseModel], loc: tuple[object, ...]) -> tuple[type[BaseModel], FieldInfo | None]:
    """The table a validation error's location lies in and the field it names (None: a table itself, or a
    key the table does not have). Table names and list indexes in `loc` are walked through."""
    field: FieldInfo | None = None
    for part in loc:
        if field is not None:
            table = table_of(field)
            if table is None:
                break  # below a plain key (a list item, a union member): the key is what the error is about
            form, model = table
            field = None
            if form != "table":
                continue  # this part is the table's name or the list index
        field = keys(model).get(str(part))
        if field is None:
            break
    return model, field
