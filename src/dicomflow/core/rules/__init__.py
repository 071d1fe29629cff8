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


from dicomflow.core._lazy import lazy_exports

# Exports load lazily (PEP 562): importing one light submodule (e.g. options) must not pull in
# pydicom and the engine, which would slow every command's start-up.
_EXPORTS = {
    "CT_BODY_LUNGS": "builtin",
    "DEFAULT_BLOCKING_FINDINGS": "model",
    "DryRunReport": "dryrun",
    "GroupOperator": "model",
    "Operator": "operators",
    "RULE_STATUSES": "status",
    "RoiStyle": "model",
    "Rule": "model",
    "RuleGroup": "model",
    "Ruleset": "model",
    "SeriesContext": "evaluate",
    "SeriesEvaluation": "evaluate",
    "SeriesRequirement": "model",
    "SeriesStatus": "status",
    "Template": "model",
    "builtin_templates": "builtin",
    "clause_from_dict": "model",
    "default_rulesets": "builtin",
    "dry_run": "dryrun",
    "evaluate_ruleset": "evaluate",
    "evaluate_series": "evaluate",
    "find_series": "dryrun",
    "load_rules_file": "builtin",
    "parse_rules_document": "builtin",
    "template_problems": "evaluate",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_BLOCKING_FINDINGS",
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
