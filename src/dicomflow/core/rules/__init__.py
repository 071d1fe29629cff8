"""Rules pick the processing template for a series; every decision comes with an explanation.

Plain data, no database: :class:`Ruleset` / :class:`Template` load from and dump to JSON dicts
(formats in :mod:`.model`), :func:`evaluate_series` judges one series (a representative header plus
its instance count) and returns a :class:`SeriesEvaluation` with a :class:`SeriesStatus`, the chosen
template and an explanation of every clause on the actual values.

Operators (semantics in :mod:`.operators`): equals, not_equals, contains, not_contains,
starts_with, ends_with, regex, gt, lt, gte, lte, in, exists, not_exists; ``ignore_case`` for
strings; numeric comparison when the rule's value is a number; multi-valued elements match when
ANY value matches (negated operators: when NO value matches). Attributes: keyword, tag or a path
into sequences (:mod:`.attributes`). Masking of identifying values: :mod:`.privacy`.
"""

from dicomflow.core.rules.builtin import (
    CT_BODY_LUNGS,
    builtin_templates,
    default_rulesets,
    load_rules_file,
    parse_rules_document,
)
from dicomflow.core.rules.dryrun import DryRunReport, dry_run, find_series
from dicomflow.core.rules.evaluate import (
    SeriesContext,
    SeriesEvaluation,
    evaluate_ruleset,
    evaluate_series,
    template_problems,
)
from dicomflow.core.rules.model import (
    GroupOperator,
    RoiStyle,
    Rule,
    RuleGroup,
    Ruleset,
    SeriesRequirement,
    Template,
    clause_from_dict,
)
from dicomflow.core.rules.operators import Operator
from dicomflow.core.rules.status import RULE_STATUSES, SeriesStatus

__all__ = [
    "CT_BODY_LUNGS",
    "RULE_STATUSES",
    "DryRunReport",
    "GroupOperator",
    "Operator",
    "RoiStyle",
    "Rule",
    "RuleGroup",
    "Ruleset",
    "SeriesContext",
    "SeriesEvaluation",
    "SeriesRequirement",
    "SeriesStatus",
    "Template",
    "builtin_templates",
    "clause_from_dict",
    "default_rulesets",
    "dry_run",
    "evaluate_ruleset",
    "evaluate_series",
    "find_series",
    "load_rules_file",
    "parse_rules_document",
    "template_problems",
]
