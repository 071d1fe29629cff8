"""Derived-structure expressions as data: their validation (no numpy; templates load fast).

The grammar and the computation on masks are documented in :mod:`dicomflow.core.segmentation.derived`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dicomflow.errors import RuleDefinitionError

DIRECTIONS = ("right", "left", "anterior", "posterior", "superior", "inferior")
MAX_MARGIN_MM = 100.0
OPS = ("margin", "union", "intersection", "subtract", "crop")


def validate_expression(expression: Any, known: set[str], where: str = "derived structure") -> None:
    """Raise RuleDefinitionError unless ``expression`` is well formed and names only ``known`` structures."""
    if isinstance(expression, str):
        if expression not in known:
            raise RuleDefinitionError(f"{where}: unknown structure '{expression}' (known: {', '.join(sorted(known))})")
        return
    if not isinstance(expression, dict) or expression.get("op") not in OPS:
        raise RuleDefinitionError(f"{where}: an expression is a structure name or an object with 'op' one of {', '.join(OPS)}")
    op = expression["op"]
    allowed = {"margin": {"op", "of", "mm"}, "union": {"op", "of"}, "intersection": {"op", "of"},
               "subtract": {"op", "of", "minus"}, "crop": {"op", "of", "to", "inside_mm"}}[op]
    extra = set(expression) - allowed
    if extra:
        raise RuleDefinitionError(f"{where}: '{op}' does not take {', '.join(sorted(extra))}")
    if op in ("union", "intersection"):
        parts = expression.get("of")
        if not isinstance(parts, list) or len(parts) < 2:
            raise RuleDefinitionError(f"{where}: '{op}' needs a list of at least two structures in 'of'")
        for part in parts:
            validate_expression(part, known, where)
        return
    if "of" not in expression:
        raise RuleDefinitionError(f"{where}: '{op}' needs 'of'")
    validate_expression(expression["of"], known, where)
    if op == "margin":
        margins(expression.get("mm"), where)
    elif op == "subtract":
        validate_expression(expression.get("minus"), known, where)
    elif op == "crop":
        validate_expression(expression.get("to"), known, where)
        inside = expression.get("inside_mm", 0)
        if not isinstance(inside, (int, float)) or isinstance(inside, bool) or not 0 <= inside <= MAX_MARGIN_MM:
            raise RuleDefinitionError(f"{where}: 'inside_mm' must be a number of mm from 0 to {MAX_MARGIN_MM:.0f}")


def margins(value: Any, where: str) -> dict[str, float]:
    """Per-direction margins (mm) from a number (uniform; negative contracts) or a direction map."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if number(value):
        if abs(value) > MAX_MARGIN_MM:
            raise RuleDefinitionError(f"{where}: a margin is at most {MAX_MARGIN_MM:.0f} mm")
        return {d: float(value) for d in DIRECTIONS}
    if isinstance(value, Mapping) and value and set(value) <= set(DIRECTIONS) and all(
            number(v) and 0 <= v <= MAX_MARGIN_MM for v in value.values()):
        return {d: float(value.get(d, 0.0)) for d in DIRECTIONS}
    raise RuleDefinitionError(f"{where}: 'mm' must be a number (mm) or an object with some of "
                              f"{', '.join(DIRECTIONS)} (each 0-{MAX_MARGIN_MM:.0f} mm)")
