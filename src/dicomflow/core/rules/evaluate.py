"""Evaluate rulesets on a series and choose its template, explaining every decision.

A series is judged on one representative header (its first instance, read without pixels) plus
what only the whole series knows: ``NumberOfSeriesRelatedInstances`` (0020,1209) is answered from
the series' instance count, whatever the header says, so "at least N images" is a plain rule.

Outcome (:class:`SeriesEvaluation`):
- no enabled ruleset matched → ``RULE_NOT_MATCHED``;
- more than one matched → ``MULTIPLE_RULES_MATCHED`` (no template chosen: a person decides);
- exactly one matched but it names no template, or a template that is not known →
  ``NO_TEMPLATE_FOUND``;
- else ``RULE_MATCHED`` with that template.
Every clause is evaluated (no short-circuit) so the explanation is complete. Explanations keep
the actual values for the UI; ``to_dict(mask_identifying=True)`` replaces values of identifying
attributes (see :mod:`dicomflow.core.rules.privacy`) with ``***`` for logs and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from dicomflow.core.rules.attributes import Lookup, lookup
from dicomflow.core.rules.model import GroupOperator, Rule, RuleGroup, Ruleset, Template
from dicomflow.core.rules.operators import NEGATIONS, PRESENCE, SYMBOLS, Operator, compare
from dicomflow.core.rules.privacy import MASK, is_identifying_path
from dicomflow.core.rules.status import SeriesStatus
from dicomflow.errors import DicomReadError

SERIES_INSTANCE_COUNT_TAG = Tag(0x0020, 0x1209)  # NumberOfSeriesRelatedInstances
MAX_SHOWN_VALUES = 20  # an explanation lists at most this many actual values per clause


@dataclass
class SeriesContext:
    """What rules see of one series: a representative header and the series' instance count."""

    dataset: Dataset
    instance_count: int | None = None

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", ""))

    @classmethod
    def from_file(cls, path: str | Path, instance_count: int | None = None) -> SeriesContext:
        """Context from one representative file of a series (read without pixel data)."""
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError) as exc:
            raise DicomReadError(f"{path}: cannot read DICOM header ({type(exc).__name__})") from None
        return cls(dataset, instance_count)


@dataclass
class ClauseResult:
    rule: Rule
    matched: bool
    present: bool
    values: list[Any]
    matched_value: Any = None
    identifying: bool = False

    def to_dict(self, mask_identifying: bool = False) -> dict[str, Any]:
        mask = mask_identifying and self.identifying
        rule = self.rule
        out: dict[str, Any] = {
            "attribute": rule.attribute,
            "operator": rule.operator.value,
        }
        if rule.operator not in PRESENCE:
            out["value"] = MASK if mask else rule.value
        if rule.ignore_case:
            out["ignore_case"] = True
        out["matched"] = self.matched
        out["actual"] = (MASK if mask else list(self.values[:MAX_SHOWN_VALUES])) if self.present else None
        if len(self.values) > MAX_SHOWN_VALUES:
            out["actual_count"] = len(self.values)  # only the first values are listed
        if self.matched_value is not None:
            out["matched_value"] = MASK if mask else self.matched_value
        if mask:
            out["masked"] = True
        out["reason"] = self.reason(mask)
        return out

    def reason(self, mask: bool = False) -> str:
        rule, op = self.rule, self.rule.operator
        name = rule.attribute
        if op is Operator.EXISTS:
            return f"{name} is present" if self.matched else f"{name} is absent or empty"
        if op is Operator.NOT_EXISTS:
            return f"{name} is absent or empty" if self.matched else f"{name} is present"
        expected = MASK if mask else repr(rule.value)
        verb = SYMBOLS.get(op, op.value.replace("_", " "))
        if not self.present:
            return f"{name} is absent, so '{name} {verb} {expected}' " + ("holds" if self.matched else "fails")
        if op in NEGATIONS:
            return (
                f"no value of {name} {NEGATIONS[op].value.replace('_', ' ')} {expected}"
                if self.matched
                else f"{name} value {MASK if mask else repr(self.matched_value)} "
                f"{NEGATIONS[op].value.replace('_', ' ')} {expected}"
            )
        if self.matched:
            return f"{name} value {MASK if mask else repr(self.matched_value)} {verb} {expected}"
        shown = MASK if mask else ", ".join(repr(v) for v in self.values[:MAX_SHOWN_VALUES]) or "(no comparable value)"
        if not mask and len(self.values) > MAX_SHOWN_VALUES:
            shown += f", ... {len(self.values)} values"
        return f"no value of {name} ({shown}) {verb} {expected}"


@dataclass
class GroupResult:
    group: RuleGroup
    matched: bool
    clauses: list[Union[ClauseResult, GroupResult]]

    def to_dict(self, mask_identifying: bool = False) -> dict[str, Any]:
        return {
            "operator": self.group.operator.value,
            "matched": self.matched,
            "clauses": [c.to_dict(mask_identifying) for c in self.clauses],
        }


@dataclass
class RulesetResult:
    ruleset: Ruleset
    matched: bool
    detail: Union[ClauseResult, GroupResult, None]  # None: ruleset disabled, not evaluated

    def to_dict(self, mask_identifying: bool = False) -> dict[str, Any]:
        return {
            "ruleset": self.ruleset.name,
            "template": self.ruleset.template,
            "enabled": self.ruleset.enabled,
            "matched": self.matched,
            "match": self.detail.to_dict(mask_identifying) if self.detail is not None else None,
        }


@dataclass
class SeriesEvaluation:
    series_uid: str
    status: SeriesStatus
    template: str | None
    summary: str
    rulesets: list[RulesetResult] = field(default_factory=list)

    @property
    def matched_rulesets(self) -> list[str]:
        return [r.ruleset.name for r in self.rulesets if r.matched]

    def explanation(self, mask_identifying: bool = False) -> dict[str, Any]:
        """JSON-ready explanation; masked values for anything printed outside the UI."""
        return {
            "summary": self.summary,
            "matched_rulesets": self.matched_rulesets,
            "rulesets": [r.to_dict(mask_identifying) for r in self.rulesets],
        }

    def to_dict(self, mask_identifying: bool = False) -> dict[str, Any]:
        return {
            "uid": self.series_uid,
            "status": self.status.value,
            "template": self.template,
            "explanation": self.explanation(mask_identifying),
        }


def _lookup(context: SeriesContext, rule: Rule) -> Lookup:
    path = rule.path
    if len(path.segments) == 1 and path.leaf == SERIES_INSTANCE_COUNT_TAG and context.instance_count is not None:
        return Lookup(present=True, values=[int(context.instance_count)], vrs={"IS"})
    return lookup(context.dataset, path)


def evaluate_rule(rule: Rule, context: SeriesContext) -> ClauseResult:
    found = _lookup(context, rule)
    op = rule.operator
    identifying = is_identifying_path(rule.path.tags, found.vrs)
    result = ClauseResult(rule, False, found.present, found.values, identifying=identifying)
    if op is Operator.EXISTS:
        result.matched = found.present
        return result
    if op is Operator.NOT_EXISTS:
        result.matched = not found.present
        return result
    positive = NEGATIONS.get(op, op)
    hit = next(
        (v for v in found.values if compare(positive, v, rule.value, rule.ignore_case, rule.pattern)),
        None,
    )
    any_hit = hit is not None
    result.matched_value = hit
    result.matched = (not any_hit) if op in NEGATIONS else any_hit
    return result


def evaluate_clause(clause: Union[Rule, RuleGroup], context: SeriesContext) -> Union[ClauseResult, GroupResult]:
    if isinstance(clause, Rule):
        return evaluate_rule(clause, context)
    results = [evaluate_clause(c, context) for c in clause.clauses]
    flags = [r.matched for r in results]
    matched = all(flags) if clause.operator is GroupOperator.AND else any(flags)
    return GroupResult(clause, matched, results)


def evaluate_ruleset(ruleset: Ruleset, context: SeriesContext) -> RulesetResult:
    if not ruleset.enabled:
        return RulesetResult(ruleset, False, None)
    detail = evaluate_clause(ruleset.match, context)
    return RulesetResult(ruleset, detail.matched, detail)


def evaluate_series(
    context: SeriesContext,
    rulesets: Iterable[Ruleset],
    templates: Mapping[str, Template] | Iterable[str] | None = None,
) -> SeriesEvaluation:
    """Evaluate every ruleset on the series and decide its status and template.

    ``templates``: the known templates (a mapping or names); None means any template name is
    accepted as known (useful when the caller checks names itself).
    """
    results = [evaluate_ruleset(r, context) for r in rulesets]
    matched = [r for r in results if r.matched]
    known = None if templates is None else set(templates)
    uid = context.series_uid
    if not matched:
        evaluated = sum(1 for r in results if r.detail is not None)
        return SeriesEvaluation(
            uid, SeriesStatus.RULE_NOT_MATCHED, None, f"none of {evaluated} enabled ruleset(s) matched", results
        )
    if len(matched) > 1:
        names = ", ".join(r.ruleset.name for r in matched)
        return SeriesEvaluation(
            uid,
            SeriesStatus.MULTIPLE_RULES_MATCHED,
            None,
            f"{len(matched)} rulesets matched ({names}); choose the template by hand or make the rules exclusive",
            results,
        )
    ruleset = matched[0].ruleset
    if not ruleset.template:
        return SeriesEvaluation(
            uid, SeriesStatus.NO_TEMPLATE_FOUND, None, f"ruleset '{ruleset.name}' matched but links no template", results
        )
    if known is not None and ruleset.template not in known:
        return SeriesEvaluation(
            uid,
            SeriesStatus.NO_TEMPLATE_FOUND,
            None,
            f"ruleset '{ruleset.name}' matched but its template '{ruleset.template}' does not exist",
            results,
        )
    return SeriesEvaluation(
        uid,
        SeriesStatus.RULE_MATCHED,
        ruleset.template,
        f"ruleset '{ruleset.name}' matched: template '{ruleset.template}'",
        results,
    )


def template_problems(template: Template, context: SeriesContext) -> list[str]:
    """Why ``template`` cannot process the series (empty when it can): for hand-picked templates."""
    req, ds = template.requires, context.dataset
    problems = []
    modality = str(ds.get("Modality", ""))
    if req.modalities and modality not in req.modalities:
        problems.append(f"template '{template.name}' needs modality {'/'.join(req.modalities)}, series is '{modality}'")
    sop_class = str(ds.get("SOPClassUID", ""))
    if req.sop_class_uids and sop_class not in req.sop_class_uids:
        problems.append(f"template '{template.name}' does not accept SOP class {sop_class}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    images = max(frames, context.instance_count or 1)
    if images < req.min_images:
        problems.append(f"template '{template.name}' needs at least {req.min_images} images, series has {images}")
    return problems
