"""Reading scalar parameter values (numbers, text, booleans, selects) from a request.

Galaxy clients send numbers as strings, booleans as "true"/"True"/"yes", selects as any
scalar; these functions accept those shapes, apply defaults, and refuse anything else
with a message naming the parameter.
"""

from __future__ import annotations

import math
from typing import Any

from app.errors import RequestParameterInvalid, RequestParameterMissing
from app.tools.columns import parse_column, parse_columns
from app.tools.models import BooleanParam, DataColumnParam, FloatParam, IntegerParam, SelectParam, TextParam

MISSING: Any = object()
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def short(value: Any) -> str:
    """A value shown in an error message, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def scalar(value: Any, where: str) -> Any:
    """A single value (``{"value": x}`` unwrapped); lists and objects are refused."""
    if isinstance(value, dict) and set(value) == {"value"}:  # {"value": x}, as some clients send
        value = value["value"]
    if isinstance(value, (dict, list)):
        raise RequestParameterInvalid(f"parameter '{where}': expected a single value, got {short(value)}")
    return value


def number(param: IntegerParam | FloatParam, value: Any, where: str, kind: type) -> int | float | None:
    """An integer or float within the parameter's bounds, or its default."""
    value = scalar(value, where)
    if value is MISSING or value is None or (isinstance(value, str) and not value.strip()):
        if param.value is not None:
            return param.value
        if param.optional:
            return None
        raise RequestParameterMissing(f"parameter '{where}': a value is required")
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise RequestParameterInvalid(f"parameter '{where}': expected {what}, got {value!r}")
    try:
        number = kind(value.strip()) if isinstance(value, str) else kind(value)
    except (TypeError, ValueError):
        raise RequestParameterInvalid(f"parameter '{where}': {short(value)} is not {what}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise RequestParameterInvalid(f"parameter '{where}': {value!r} is not {what}")
    if kind is float and not math.isfinite(number):
        raise RequestParameterInvalid(f"parameter '{where}': {value!r} is not a finite number")
    if param.min is not None and number < param.min:
        raise RequestParameterInvalid(f"parameter '{where}': {number} is below the minimum {param.min}")
    if param.max is not None and number > param.max:
        raise RequestParameterInvalid(f"parameter '{where}': {number} is above the maximum {param.max}")
    return number


def text(param: TextParam, value: Any, where: str) -> str | None:
    """Text (numbers and booleans as their text), or the default."""
    value = scalar(value, where)
    if value is MISSING or value is None:
        return None if param.optional and not param.value else param.value
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        raise RequestParameterInvalid(f"parameter '{where}': NUL characters are not allowed")
    if len(text) > param.max_length:
        raise RequestParameterInvalid(f"parameter '{where}': longer than {param.max_length} characters")
    return text


def boolean(param: BooleanParam, value: Any, where: str) -> bool:
    """True or false from Galaxy's many spellings, or the default."""
    value = scalar(value, where)
    if value is MISSING or value is None:
        return param.checked
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if value == param.truevalue or lowered in _TRUE:
            return True
        if value == param.falsevalue or lowered in _FALSE:
            return False
    raise RequestParameterInvalid(f"parameter '{where}': expected true or false, got {short(value)}")


def select(param: SelectParam, value: Any, where: str) -> str | list[str] | None:
    """One of the options (a list of them for a multiple select), or the default."""
    allowed = [o.value for o in param.options]
    if param.multiple:
        if value is MISSING or value is None:
            chosen = param.default or []
        elif isinstance(value, list):
            chosen = [str(scalar(v, where)) for v in value]
        else:
            text = str(scalar(value, where))
            chosen = [part for part in text.split(",") if part] if text else []
        for item in chosen:
            if item not in allowed:
                raise RequestParameterInvalid(not_an_option(where, item, allowed))
        if not chosen and not param.optional:
            raise RequestParameterMissing(f"parameter '{where}': choose at least one of {', '.join(map(repr, allowed))}")
        return chosen
    value = scalar(value, where)
    if value is MISSING or value is None or (value == "" and "" not in allowed):
        default = param.default
        if default is None and not param.optional:
            raise RequestParameterMissing(f"parameter '{where}': a value is required")
        return default
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if text not in allowed:
        raise RequestParameterInvalid(not_an_option(where, text, allowed))
    return text


def data_column(param: DataColumnParam, value: Any, where: str) -> str | list[str] | None:
    """Column number(s) as text ('c2' and 2 read as '2'), or the default (Galaxy: column 1)."""
    if isinstance(value, dict) and set(value) == {"value"}:
        value = value["value"]
    if value is MISSING or value is None or value == "" or value == []:
        return _column_default(param, where)
    if isinstance(value, dict):
        raise RequestParameterInvalid(f"parameter '{where}': expected a column number, got {short(value)}")
    try:
        if param.multiple:
            return parse_columns(value) or _column_default(param, where)
        if isinstance(value, list):
            if len(value) != 1:
                raise RequestParameterInvalid(f"parameter '{where}': takes one column, {len(value)} given")
            value = value[0]
        return parse_column(value)
    except ValueError as exc:
        raise RequestParameterInvalid(f"parameter '{where}': {exc}") from None


def _column_default(param: DataColumnParam, where: str) -> str | list[str] | None:
    """What an empty data_column means: its default; column 1 as Galaxy's first option; else nothing."""
    if param.value is not None:
        return param.value
    if param.accept_default or not (param.multiple or param.may_be_empty):
        return ["1"] if param.multiple else "1"
    if param.may_be_empty:
        return [] if param.multiple else None
    raise RequestParameterMissing(f"parameter '{where}': choose at least one column")


def not_an_option(where: str, value: str, allowed: list[str]) -> str:
    """The message for a value outside a select's options."""
    return f"parameter '{where}': {short(value)} is not one of the options {', '.join(map(repr, allowed))}"
