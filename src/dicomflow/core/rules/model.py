"""Rules, rulesets and templates as plain data: dataclasses that load from and dump to JSON dicts.

The Django side stores these dicts (JSON fields) and calls :func:`Ruleset.from_dict` to evaluate;
nothing here knows about a database. Formats::

    rule      {"attribute": "Modality", "operator": "equals", "value": "CT", "ignore_case": false}
    group     {"and": [rule | group, ...]}   or   {"or": [rule | group, ...]}
    ruleset   {"name": "ct-images", "template": "ct-body-lungs", "description": "...",
               "enabled": true, "match": rule | group}
    template  {"name", "description", "processor", "parameters": {...},
               "requires": {"modalities": [...], "sop_class_uids": [...], "min_images": N},
               "rois": [{"key", "name", "color": [r, g, b], "type": "ORGAN", "label": 1}],
               "destinations": [{...}, ...],
               "blocking_findings": ["COMPLETENESS_MISSING_SLICES", ...]}

Definitions are validated when loaded (unknown keyword, operator or a value of the wrong kind
raise :class:`~dicomflow.errors.RuleDefinitionError`), so evaluation itself never fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union

from dicomflow.core.rules.attributes import AttributePath, parse_path
from dicomflow.core.rules.operators import ORDERING, PRESENCE, Operator, is_number
from dicomflow.errors import RuleDefinitionError


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise RuleDefinitionError(f"'{key}' must be true or false, not {value!r}")
    return value


class GroupOperator(str, Enum):
    AND = "and"
    OR = "or"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Rule:
    attribute: str
    operator: Operator
    value: Any = None
    ignore_case: bool = False
    path: AttributePath = field(init=False, repr=False, compare=False)
    pattern: re.Pattern | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        try:
            op = Operator(self.operator)
        except ValueError:
            names = ", ".join(o.value for o in Operator)
            raise RuleDefinitionError(f"unknown operator '{self.operator}' (use one of: {names})") from None
        object.__setattr__(self, "operator", op)
        object.__setattr__(self, "path", parse_path(self.attribute))
        where = f"rule on '{self.attribute}' ({op})"
        if op in PRESENCE:
            if self.value is not None:
                raise RuleDefinitionError(f"{where} takes no value")
        elif op in ORDERING:
            if not is_number(self.value):
                raise RuleDefinitionError(f"{where} needs a number as its value")
        elif op is Operator.IN:
            if not isinstance(self.value, (list, tuple)) or not self.value:
                raise RuleDefinitionError(f"{where} needs a non-empty list as its value")
            if not all(isinstance(v, str) or is_number(v) for v in self.value):
                raise RuleDefinitionError(f"{where}: list items must be strings or numbers")
            object.__setattr__(self, "value", list(self.value))
        elif op is Operator.REGEX:
            if not isinstance(self.value, str):
                raise RuleDefinitionError(f"{where} needs a regular expression string")
            try:
                pattern = re.compile(self.value, re.IGNORECASE if self.ignore_case else 0)
            except re.error as exc:
                raise RuleDefinitionError(f"{where}: invalid regular expression ({exc})") from None
            object.__setattr__(self, "pattern", pattern)
        elif op in (Operator.EQUALS, Operator.NOT_EQUALS):
            if not (isinstance(self.value, str) or is_number(self.value)):
                raise RuleDefinitionError(f"{where} needs a string or a number")
        elif not isinstance(self.value, str):
            raise RuleDefinitionError(f"{where} needs a string")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        unknown = set(data) - {"attribute", "operator", "value", "ignore_case"}
        if unknown:
            raise RuleDefinitionError(f"rule has unknown keys: {', '.join(sorted(unknown))}")
        if "attribute" not in data or "operator" not in data:
            raise RuleDefinitionError("a rule needs 'attribute' and 'operator'")
        return cls(data["attribute"], data["operator"], data.get("value"), _flag(data, "ignore_case", False))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attribute": self.attribute, "operator": self.operator.value}
        if self.operator not in PRESENCE:
            out["value"] = self.value
        if self.ignore_case:
            out["ignore_case"] = True
        return out


@dataclass(frozen=True)
class RuleGroup:
    operator: GroupOperator
    clauses: tuple[Union[Rule, RuleGroup], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operator", GroupOperator(self.operator))
        object.__setattr__(self, "clauses", tuple(self.clauses))
        if not self.clauses:
            raise RuleDefinitionError(f"an '{self.operator}' group needs at least one clause")

    def to_dict(self) -> dict[str, Any]:
        return {self.operator.value: [c.to_dict() for c in self.clauses]}


Clause = Union[Rule, RuleGroup]


def clause_from_dict(data: Any) -> Clause:
    """A rule or an AND/OR group from its dict form."""
    if not isinstance(data, dict):
        raise RuleDefinitionError("a clause must be an object: a rule or {\"and\": [...]} / {\"or\": [...]}")
    groups = [k for k in ("and", "or") if k in data]
    if groups:
        if len(data) != 1:
            raise RuleDefinitionError("a group is exactly one key, 'and' or 'or', holding a list of clauses")
        items = data[groups[0]]
        if not isinstance(items, list):
            raise RuleDefinitionError(f"'{groups[0]}' must hold a list of clauses")
        return RuleGroup(GroupOperator(groups[0]), tuple(clause_from_dict(i) for i in items))
    return Rule.from_dict(data)


@dataclass(frozen=True)
class Ruleset:
    name: str
    match: Clause
    template: str | None = None
    description: str = ""
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ruleset:
        if not isinstance(data, dict) or not data.get("name"):
            raise RuleDefinitionError("a ruleset needs a 'name'")
        if "match" not in data:
            raise RuleDefinitionError(f"ruleset '{data['name']}' needs a 'match' clause")
        return cls(
            name=str(data["name"]),
            match=clause_from_dict(data["match"]),
            template=data.get("template") or None,
            description=str(data.get("description", "")),
            enabled=_flag(data, "enabled", True),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "description": self.description,
            "enabled": self.enabled,
            "match": self.match.to_dict(),
        }


@dataclass(frozen=True)
class RoiStyle:
    """How one structure a processor produces is named and drawn in the result."""

    key: str  # the processor's own name for the structure, e.g. "body", "lung_left"
    name: str  # ROI Name written into the RTSTRUCT
    color: tuple[int, int, int]
    type: str = "ORGAN"  # RT ROI Interpreted Type (EXTERNAL, ORGAN, PTV, ...)
    label: int | None = None  # value in a label map (NIfTI bridge), when the processor uses one
    observation_label: str | None = None  # ROI Observation Label (≤ 16 characters); default: the name

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoiStyle:
        try:
            color = tuple(int(c) for c in data["color"])
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ValueError
            observation_label = data.get("observation_label")
            if observation_label is not None and not isinstance(observation_label, str):
                raise ValueError
            return cls(str(data["key"]), str(data["name"]), color, str(data.get("type", "ORGAN")), data.get("label"),
                       observation_label or None)
        except (KeyError, TypeError, ValueError):
            raise RuleDefinitionError("an ROI style needs 'key', 'name' and 'color' as three integers 0-255 "
                                      "('observation_label', when given, is text)") from None

    @property
    def display_label(self) -> str:
        return (self.observation_label or self.name)[:16]

    def to_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "name": self.name, "color": list(self.color), "type": self.type}
        if self.label is not None:
            out["label"] = self.label
        if self.observation_label:
            out["observation_label"] = self.observation_label
        return out


@dataclass(frozen=True)
class SeriesRequirement:
    """What a series must be for a template to apply (checked when a user picks one by hand)."""

    modalities: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    min_images: int = 1

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SeriesRequirement:
        data = data or {}
        return cls(
            tuple(data.get("modalities", ())), tuple(data.get("sop_class_uids", ())), int(data.get("min_images", 1))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.modalities),
            "sop_class_uids": list(self.sop_class_uids),
            "min_images": self.min_images,
        }


# Check findings that make a series unusable as processing input: a stack that cannot be built
# (no geometry, gaps, duplicates, mixed orientation, pixel spacing or matrix), required attributes
# missing, empty or malformed UIDs, or instances of several patients. A template that lists none
# blocks on none; findings not listed are recorded as warnings.
DEFAULT_BLOCKING_FINDINGS: tuple[str, ...] = (
    "COMPLETENESS_NO_GEOMETRY",
    "COMPLETENESS_MISSING_SLICES",
    "COMPLETENESS_DUPLICATE_POSITIONS",
    "COMPLETENESS_INCONSISTENT_ORIENTATION",
    "COMPLETENESS_INCONSISTENT_PIXEL_SPACING",
    "COMPLETENESS_INCONSISTENT_MATRIX",
    "VALIDITY_MISSING_TYPE1",
    "VALIDITY_EMPTY_TYPE1",
    "VALIDITY_MALFORMED_UID",
    "CONSISTENCY_PATIENT_ID",
)


def _finding_codes(value: Any) -> tuple[str, ...]:
    from dicomflow.core.checks.findings import Code

    if value is None:
        return DEFAULT_BLOCKING_FINDINGS
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RuleDefinitionError("'blocking_findings' must be a list of check finding codes")
    known = {c.value for c in Code}
    unknown = [v for v in value if v not in known]
    if unknown:
        raise RuleDefinitionError(f"unknown check finding code(s) in 'blocking_findings': {', '.join(unknown)}")
    return tuple(dict.fromkeys(value))


NOMENCLATURES = ("TG-263", "local")


def _derived(value: Any, rois: tuple[RoiStyle, ...]) -> tuple[dict[str, Any], ...]:
    """Derived-structure definitions, checked: each has a name, a colour and a valid expression
    over the template's structures (ROI keys or names) and the derived structures before it."""
    from dicomflow.core.rules.derived import validate_expression

    if value is None or value == []:
        return ()
    if not isinstance(value, list):
        raise RuleDefinitionError("'derived' must be a list of derived structures")
    known = {r.key for r in rois} | {r.name for r in rois}
    out = []
    for index, item in enumerate(value, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise RuleDefinitionError(f"derived structure {index} needs a 'name'")
        name = item["name"].strip()
        if name in known:
            raise RuleDefinitionError(f"derived structure '{name}' has the name of another structure")
        extra = set(item) - {"name", "color", "type", "observation_label", "expression"}
        if extra:
            raise RuleDefinitionError(f"derived structure '{name}' does not take {', '.join(sorted(extra))}")
        RoiStyle.from_dict({"key": name, **{k: v for k, v in item.items() if k != "expression"}})
        validate_expression(item.get("expression"), known, f"derived structure '{name}'")
        known.add(name)
        out.append(dict(item, name=name))
    return tuple(out)


@dataclass(frozen=True)
class Template:
    name: str
    processor: str
    parameters: dict[str, Any] = field(default_factory=dict)
    requires: SeriesRequirement = field(default_factory=SeriesRequirement)
    rois: tuple[RoiStyle, ...] = ()
    destinations: tuple[dict[str, Any], ...] = ()
    description: str = ""
    blocking_findings: tuple[str, ...] = DEFAULT_BLOCKING_FINDINGS
    derived: tuple[dict[str, Any], ...] = ()  # core.segmentation.derived: structures computed on the result
    nomenclature: str = "TG-263"  # or "local": structure names are not checked against TG-263

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Template:
        if not isinstance(data, dict) or not data.get("name") or not data.get("processor"):
            raise RuleDefinitionError("a template needs a 'name' and a 'processor'")
        rois = tuple(RoiStyle.from_dict(r) for r in data.get("rois", ()))
        nomenclature = data.get("nomenclature", "TG-263")
        if nomenclature not in NOMENCLATURES:
            raise RuleDefinitionError(f"'nomenclature' must be one of {', '.join(NOMENCLATURES)}")
        return cls(
            name=str(data["name"]),
            processor=str(data["processor"]),
            parameters=dict(data.get("parameters", {})),
            requires=SeriesRequirement.from_dict(data.get("requires")),
            rois=rois,
            destinations=tuple(dict(d) for d in data.get("destinations", ())),
            description=str(data.get("description", "")),
            blocking_findings=_finding_codes(data.get("blocking_findings")),
            derived=_derived(data.get("derived"), rois),
            nomenclature=nomenclature,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "processor": self.processor,
            "parameters": dict(self.parameters),
            "requires": self.requires.to_dict(),
            "rois": [r.to_dict() for r in self.rois],
            "destinations": [dict(d) for d in self.destinations],
            "blocking_findings": list(self.blocking_findings),
            "derived": [dict(d) for d in self.derived],
            "nomenclature": self.nomenclature,
        }

    def structure_problems(self) -> list[str]:
        """Names, labels and types of the structures (and derived ones) that break the template's
        nomenclature: TG-263 names, labels of at most 16 characters, RT ROI Interpreted Types."""
        from dicomflow.core.quality.nomenclature import INTERPRETED_TYPES, MAX_LABEL, structure_problems

        problems = []
        for style in self.rois:
            if self.nomenclature == "TG-263":
                problems += structure_problems(style.name, style.observation_label, style.type)
            else:
                if style.observation_label is not None and not 0 < len(style.observation_label) <= MAX_LABEL:
                    problems.append(f"label of '{style.name}' must be 1 to {MAX_LABEL} characters")
                if style.type not in INTERPRETED_TYPES:
                    problems.append(f"type of '{style.name}' is not an RT ROI Interpreted Type")
        for item in self.derived:
            style = RoiStyle.from_dict({"key": item["name"], **item})
            if self.nomenclature == "TG-263":
                problems += structure_problems(style.name, style.observation_label, style.type)
        return problems

    def roi(self, key: str) -> RoiStyle | None:
        return next((r for r in self.rois if r.key == key), None)
