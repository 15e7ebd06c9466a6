"""Conditional steps: the ``when`` expressions Galaxy workflows use, parsed and evaluated.

Galaxy evaluates a step's ``when`` as a CWL JavaScript expression over the step's inputs,
and must get a boolean. Real workflows use a few shapes, which Nebula reads without a
JavaScript engine: ``$(inputs.NAME)``, ``$(!inputs.NAME)``, and comparisons of an input with
a literal (``==``, ``!=``, ``===``, ``!==``; the literal true, false, null, a number or a
quoted string). ``inputs["NAME"]`` may stand for ``inputs.NAME``. Galaxy 23.0 wrote
``${inputs.when}``, which Galaxy reads as ``$(inputs.when)``; so does Nebula. Anything else
is refused at import.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

LEGACY_FORM = "${inputs.when}"
SUPPORTED = "$(inputs.NAME), $(!inputs.NAME), $(inputs.NAME == literal), $(inputs.NAME != literal)"
_FORM = re.compile(
    r"""^\$\(\s*(?P<negate>!\s*)?
        inputs(?:\.(?P<dotted>[A-Za-z_$][\w$]*)|\[\s*(?:'(?P<single>[^']*)'|"(?P<double>[^"]*)")\s*\])
        \s*(?:(?P<operator>===|!==|==|!=)\s*(?P<literal>.+?)\s*)?\)$""",
    re.VERBOSE | re.DOTALL,
)


class ConditionError(ValueError):
    """A ``when`` expression Nebula cannot read, or a value it cannot decide on."""


@dataclass(frozen=True)
class Condition:
    """A parsed ``when``: which input it reads and how it turns the input's value into a boolean."""

    input_name: str
    negate: bool = False
    operator: str | None = None
    literal: Any = None

    def evaluate(self, value: Any) -> bool:
        """The condition for the input's value; ConditionError when it is not a boolean (Galaxy: when_not_boolean)."""
        if self.operator is None:
            result = (not _truthy(value)) if self.negate else value
        else:
            strict = self.operator in ("===", "!==")
            equal = _strict_equal(value, self.literal) if strict else _loose_equal(value, self.literal)
            result = equal if self.operator in ("==", "===") else not equal
        if not isinstance(result, bool):
            raise ConditionError(f"'when' must be a boolean, but inputs.{self.input_name} is {_show(value)}")
        return result


def parse_condition(expression: str) -> Condition:
    """The condition of a ``when`` expression; ConditionError naming the supported forms otherwise."""
    text = expression.strip()
    if text == LEGACY_FORM:
        text = "$(inputs.when)"
    match = _FORM.match(text)
    if match is None:
        raise ConditionError(f"unsupported 'when' expression {expression!r} (supported: {SUPPORTED})")
    name = match.group("dotted") or match.group("single") or match.group("double")
    if not name:
        raise ConditionError(f"'when' expression {expression!r} names no input")
    operator = match.group("operator")
    if operator and match.group("negate"):
        raise ConditionError(f"unsupported 'when' expression {expression!r}: negate the comparison instead "
                             f"(supported: {SUPPORTED})")
    literal = _literal(match.group("literal"), expression) if operator else None
    return Condition(name, negate=bool(match.group("negate")), operator=operator, literal=literal)


def _literal(text: str, expression: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        body = text[1:-1]
        if "'" not in body and "\\" not in body:
            return body
    try:
        value = json.loads(text)
    except ValueError:
        value = ...
    if value is ... or isinstance(value, dict | list):
        raise ConditionError(f"unsupported 'when' expression {expression!r}: {text!r} is not a literal "
                             "(true, false, null, a number or a quoted string)")
    return value


def _truthy(value: Any) -> bool:
    """JavaScript's truthiness of a JSON value."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def _strict_equal(left: Any, right: Any) -> bool:
    """JavaScript's ``===`` on JSON values (booleans are not numbers)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right and not isinstance(left, dict | list)


def _loose_equal(left: Any, right: Any) -> bool:
    """JavaScript's ``==`` on JSON values: null only equals null; booleans and text compare as numbers."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    if isinstance(left, dict | list) or isinstance(right, dict | list):
        return False
    return _number(left) == _number(right)


def _number(value: Any) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    text = str(value).strip()
    if text == "":
        return 0.0
    try:
        return float(text)
    except ValueError:
        return math.nan


def _show(value: Any) -> str:
    if value is None:
        return "null"
    shown = json.dumps(value) if isinstance(value, str | int | float | bool) else type(value).__name__
    return shown if len(shown) <= 60 else shown[:57] + "..."
