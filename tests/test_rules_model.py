"""Rules as plain data: loading, validation with actionable messages, JSON round trip."""

import json

import pytest

from dicomflow.core.rules import (
    CT_BODY_LUNGS,
    Operator,
    Rule,
    RuleGroup,
    Ruleset,
    Template,
    builtin_templates,
    clause_from_dict,
    default_rulesets,
    load_rules_file,
    parse_rules_document,
)
from dicomflow.core.rules.attributes import parse_path
from dicomflow.errors import RuleDefinitionError


def test_ruleset_round_trips_through_json():
    data = {
        "name": "mr-brain",
        "template": "t1",
        "description": "d",
        "enabled": False,
        "match": {
            "or": [
                {"attribute": "(0008,0060)", "operator": "equals", "value": "MR"},
                {"and": [{"attribute": "BodyPartExamined", "operator": "regex", "value": "^HEAD", "ignore_case": True}]},
                {"attribute": "StudyDescription", "operator": "exists"},
            ]
        },
    }
    ruleset = Ruleset.from_dict(json.loads(json.dumps(data)))
    assert isinstance(ruleset.match, RuleGroup)
    assert ruleset.match.clauses[1].clauses[0].operator is Operator.REGEX
    assert json.loads(json.dumps(ruleset.to_dict())) == data
    assert Ruleset.from_dict(ruleset.to_dict()) == ruleset


@pytest.mark.parametrize(
    "clause, fragment",
    [
        ({"attribute": "Modallity", "operator": "equals", "value": "CT"}, "'Modallity' is not a DICOM keyword"),
        ({"attribute": "Modality", "operator": "is", "value": "CT"}, "unknown operator 'is'"),
        ({"attribute": "SliceThickness", "operator": "gt", "value": "2"}, "needs a number"),
        ({"attribute": "Modality", "operator": "in", "value": "CT"}, "non-empty list"),
        ({"attribute": "Modality", "operator": "regex", "value": "(CT"}, "invalid regular expression"),
        ({"attribute": "Modality", "operator": "exists", "value": "CT"}, "takes no value"),
        ({"attribute": "Modality.CodeValue", "operator": "exists"}, "'Modality' is not a sequence"),
        ({"attribute": "Modality[0]", "operator": "exists"}, "only applies to sequences"),
        ({"attribute": "(0008,00G0)", "operator": "exists"}, "is not a keyword, a tag"),
        ({"and": []}, "needs at least one clause"),
        ({"and": [], "or": []}, "exactly one key"),
        ({"attribute": "Modality", "operator": "equals", "value": "CT", "colour": 1}, "unknown keys: colour"),
        ({"attribute": "Modality", "operator": "equals", "value": "CT", "ignore_case": "no"}, "must be true or false"),
    ],
)
def test_malformed_clauses_are_refused_with_a_message_naming_the_problem(clause, fragment):
    with pytest.raises(RuleDefinitionError) as info:
        clause_from_dict(clause)
    assert fragment in str(info.value)


def test_paths_accept_keywords_tags_and_item_selectors():
    path = parse_path("(300A,00B0)[0].BeamName")
    assert [s.index for s in path.segments] == [0, None]
    assert path.segments[0].tag == 0x300A00B0
    path = parse_path("ReferencedFrameOfReferenceSequence[*].300600C0")
    assert path.segments[0].index == "*" and path.leaf == 0x300600C0
    assert parse_path("00080060").leaf == parse_path("Modality").leaf


def test_builtin_template_and_default_ruleset_are_consistent():
    templates = builtin_templates()
    template = templates[CT_BODY_LUNGS]
    assert template.processor == "builtin.ct_body_lungs"
    assert template.requires.modalities == ("CT",)
    names = {r.key: r.name for r in template.rois}
    assert names["body"] == "Body" and names["lung_left"] == "Lung_L" and names["lung_right"] == "Lung_R"
    assert len({r.label for r in template.rois}) == len(template.rois)  # label values are distinct
    assert Template.from_dict(template.to_dict()) == template
    rulesets = default_rulesets()
    assert [r.template for r in rulesets] == [CT_BODY_LUNGS]
    # The default ruleset and the template agree on which SOP classes are CT images.
    sop_rule = next(c for c in rulesets[0].match.clauses if isinstance(c, Rule) and c.attribute == "SOPClassUID")
    assert set(sop_rule.value) == set(template.requires.sop_class_uids)


def test_rules_document_adds_templates_and_refuses_duplicates(tmp_path):
    doc = {
        "rulesets": [{"name": "a", "template": "mine", "match": {"attribute": "Modality", "operator": "exists"}}],
        "templates": [{"name": "mine", "processor": "external.command"}],
    }
    rulesets, templates = parse_rules_document(doc)
    assert set(templates) == {CT_BODY_LUNGS, "mine"} and rulesets[0].template == "mine"
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rulesets": doc["rulesets"] * 2}))
    with pytest.raises(RuleDefinitionError, match="repeated: a"):
        load_rules_file(path)
    path.write_text("{not json")
    with pytest.raises(RuleDefinitionError, match="not valid JSON"):
        load_rules_file(path)


def test_series_status_enum_holds_every_status_of_the_pipeline():
    from dicomflow.core.rules import RULE_STATUSES, SeriesStatus

    issue_statuses = (
        "UNPROCESSED RULE_MATCHED RULE_NOT_MATCHED MULTIPLE_RULES_MATCHED NO_TEMPLATE_FOUND "
        "READY_FOR_DEIDENTIFICATION DEIDENTIFIED DEIDENTIFICATION_FAILED SENT_FOR_PROCESSING "
        "RESULT_RECEIVED RESULT_INVALID RESULT_EXPORTED EXPORT_FAILED ERROR"
    ).split()
    # every status the issue named, in its order; CHECK_FAILED (issue 16: a blocking check finding
    # stops the automatic path) comes after the rule statuses
    assert [s.value for s in SeriesStatus if s.value != "CHECK_FAILED"] == issue_statuses
    assert SeriesStatus("CHECK_FAILED") in set(SeriesStatus)
    assert SeriesStatus("RULE_MATCHED") is SeriesStatus.RULE_MATCHED and f"{SeriesStatus.ERROR}" == "ERROR"
    assert RULE_STATUSES < set(SeriesStatus)
    assert json.dumps({"s": SeriesStatus.DEIDENTIFIED}) == '{"s": "DEIDENTIFIED"}'
