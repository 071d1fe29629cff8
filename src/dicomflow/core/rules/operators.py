"""Rule operators and how one actual value is compared with a rule's value.

Semantics (documented for users in ``dicomflow.core.rules``):
- numbers: when the rule's value is a JSON number, equality and ordering are numeric (``"2.50"`` in
  a DS element equals ``2.5``); ``gt/lt/gte/lte`` always need a number and never match a value that
  is not numeric;
- strings: compared after stripping padding; ``ignore_case`` makes every string operator
  case-insensitive (``regex`` too);
- multi-valued elements and ``[*]`` paths give several values: a positive operator matches when ANY
  value matches; ``not_equals`` / ``not_contains`` are the exact negation of ``equals`` /
  ``contains``, i.e. they match when NO value matches (so also when the attribute is absent);
- ``exists`` / ``not_exists``: present with a non-empty value (a sequence with at least one item).
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any


class Operator(str, Enum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    REGEX = "regex"
    GT = "gt"
    LT = "lt"
    GTE = "gte"
    LTE = "lte"
    IN = "in"
    EXISTS = "exists"
    NOT_EXISTS = "not_exists"

    def __str__(self) -> str:
        return self.value


#: Negative operators and the positive operator they negate.
NEGATIONS = {Operator.NOT_EQUALS: Operator.EQUALS, Operator.NOT_CONTAINS: Operator.CONTAINS}
PRESENCE = {Operator.EXISTS, Operator.NOT_EXISTS}
ORDERING = {Operator.GT, Operator.LT, Operator.GTE, Operator.LTE}
SYMBOLS = {
    Operator.EQUALS: "=",
    Operator.NOT_EQUALS: "!=",
    Operator.GT: ">",
    Operator.LT: "<",
    Operator.GTE: ">=",
    Operator.LTE: "<=",
}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_number(value: Any) -> float | None:
    """The numeric value of an actual value, or None when it is not a finite number."""
    if is_number(value):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def _text(value: Any, ignore_case: bool) -> str:
    text = str(value).strip()
    return text.casefold() if ignore_case else text


def _equal(actual: Any, expected: Any, ignore_case: bool) -> bool:
    if is_number(expected):
        number = as_number(actual)
        return number is not None and math.isclose(number, float(expected), rel_tol=1e-9, abs_tol=1e-9)
    return _text(actual, ignore_case) == _text(expected, ignore_case)


def compare(op: Operator, actual: Any, expected: Any, ignore_case: bool, pattern: re.Pattern | None) -> bool:
    """Whether ONE actual value satisfies a positive operator (negatives are handled by the caller)."""
    if op is Operator.EQUALS:
        return _equal(actual, expected, ignore_case)
    if op is Operator.IN:
        return any(_equal(actual, item, ignore_case) for item in expected)
    if op is Operator.CONTAINS:
        return _text(expected, ignore_case) in _text(actual, ignore_case)
    if op is Operator.STARTS_WITH:
        return _text(actual, ignore_case).startswith(_text(expected, ignore_case))
    if op is Operator.ENDS_WITH:
        return _text(actual, ignore_case).endswith(_text(expected, ignore_case))
    if op is Operator.REGEX:
        assert pattern is not None
        return pattern.search(str(actual).strip()) is not None
    if op in ORDERING:
        number = as_number(actual)
        if number is None:
            return False
        limit = float(expected)
        return {
            Operator.GT: number > limit,
            Operator.LT: number < limit,
            Operator.GTE: number >= limit,
            Operator.LTE: number <= limit,
        }[op]
    raise ValueError(f"operator {op} is not a value comparison")
