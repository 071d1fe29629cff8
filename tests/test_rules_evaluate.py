"""Rule evaluation on real (generated) headers: operators, sequence paths, statuses, explanations."""

import json

import pydicom
import pytest

from dicomflow.core.rules import (
    Rule,
    RuleGroup,
    Ruleset,
    SeriesContext,
    SeriesStatus,
    builtin_templates,
    default_rulesets,
    evaluate_series,
    template_problems,
)
from dicomflow.core.rules.evaluate import evaluate_rule
from dicomflow.core.rules.privacy import MASK, is_identifying_tag
from dicomflow.testing import synth


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    patient = synth.PatientSpec(patient_id="PAT-4711", name="Doe^Jane", sex="F", birth_date="19600102")
    ct = synth.write_image_series(out / "ct", patient=patient, n_slices=12, rows=32, cols=32)
    rs = synth.write_rtstruct(out, ct)
    plan = synth.write_rtplan(out, rs)
    return ct, rs, plan


def header(path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def ct_context(study, count=None):
    ct = study[0]
    return SeriesContext(header(ct.paths[0]), instance_count=count if count is not None else len(ct.paths))


def check(context, attribute, operator, value=None, ignore_case=False):
    return evaluate_rule(Rule(attribute, operator, value, ignore_case), context)


@pytest.mark.parametrize(
    "attribute, operator, value, ignore_case, expected",
    [
        ("Modality", "equals", "CT", False, True),
        ("Modality", "equals", "ct", False, False),
        ("Modality", "equals", "ct", True, True),
        ("Modality", "not_equals", "MR", False, True),
        ("Modality", "not_equals", "CT", False, False),
        ("(0008,0060)", "in", ["MR", "CT"], False, True),
        ("Modality", "in", ["MR", "PT"], False, False),
        ("SeriesDescription", "contains", "thorax", False, True),
        ("SeriesDescription", "not_contains", "THORAX", True, False),
        ("SeriesDescription", "starts_with", "CT", False, True),
        ("SeriesDescription", "ends_with", "abdomen", False, False),
        ("SeriesDescription", "regex", r"^ct\s+thor", True, True),
        ("SeriesDescription", "regex", r"^ct\s+thor", False, False),
        ("Rows", "equals", 32, False, True),
        ("SliceThickness", "equals", 2.5, False, True),  # DS "2.5" equals the number 2.5
        ("SliceThickness", "gt", 2, False, True),
        ("SliceThickness", "lt", 2.5, False, False),
        ("SliceThickness", "lte", 2.5, False, True),
        ("SliceThickness", "gte", 3, False, False),
        ("Modality", "gt", 1, False, False),  # not a number: never ordered
        ("ImageType", "equals", "AXIAL", False, True),  # multi-valued: any value matches
        ("ImageType", "not_contains", "LOCALIZER", False, True),
        ("ImageType", "not_equals", "PRIMARY", False, False),  # negation: no value may match
        ("PixelSpacing", "gte", 15.0, False, True),  # 500 mm / 32 = 15.6 for every value
        ("StudyDescription", "exists", None, False, True),
        ("ContrastBolusAgent", "exists", None, False, False),
        ("ContrastBolusAgent", "not_exists", None, False, True),
        ("ContrastBolusAgent", "not_equals", "X", False, True),  # absent: nothing equals
        ("ContrastBolusAgent", "equals", "X", False, False),
        ("PositionReferenceIndicator", "exists", None, False, False),  # present but empty
    ],
)
def test_operators_on_a_ct_header(study, attribute, operator, value, ignore_case, expected):
    result = check(ct_context(study), attribute, operator, value, ignore_case)
    assert result.matched is expected, result.reason()


def test_paths_into_sequences(study):
    ct, rs, plan = study
    rs_context = SeriesContext(header(rs.path))
    result = check(rs_context, "ReferencedFrameOfReferenceSequence[*].FrameOfReferenceUID", "equals", ct.frame_of_reference_uid)
    assert result.matched and result.values == [ct.frame_of_reference_uid]
    deep = "ReferencedFrameOfReferenceSequence.RTReferencedStudySequence.RTReferencedSeriesSequence.SeriesInstanceUID"
    assert check(rs_context, deep, "equals", ct.series_uid).matched
    names = check(rs_context, "StructureSetROISequence[*].ROIName", "equals", "PTV")
    assert names.matched and names.values == rs.roi_names
    assert check(rs_context, "(3006,0020)[1].ROIName", "equals", rs.roi_names[1]).matched
    assert not check(rs_context, "(3006,0020)[0].ROIName", "equals", rs.roi_names[1]).matched
    assert not check(rs_context, "(3006,0020)[99].ROIName", "exists").matched
    assert check(rs_context, "StructureSetROISequence", "exists").matched
    plan_ds = header(plan.path)
    beam_name = str(plan_ds.BeamSequence[0].BeamName)
    plan_context = SeriesContext(plan_ds)
    assert check(plan_context, "(300A,00B0)[0].BeamName", "equals", beam_name).matched
    assert check(plan_context, "BeamSequence[0].BeamName", "not_equals", beam_name + "x").matched


def test_default_ruleset_picks_ct_body_lungs_for_ct_and_explains_every_clause(study):
    evaluation = evaluate_series(ct_context(study), default_rulesets(), builtin_templates())
    assert evaluation.status is SeriesStatus.RULE_MATCHED
    assert evaluation.template == "ct-body-lungs"
    explanation = evaluation.explanation()
    match = explanation["rulesets"][0]["match"]
    flat = []

    def walk(node):
        if "clauses" in node:
            for c in node["clauses"]:
                walk(c)
        else:
            flat.append(node)

    walk(match)
    assert {c["attribute"] for c in flat} >= {"Modality", "SOPClassUID", "NumberOfSeriesRelatedInstances"}
    count_clause = next(c for c in flat if c["attribute"] == "NumberOfSeriesRelatedInstances")
    assert count_clause["actual"] == [12] and count_clause["matched"] is True
    frames = next(c for c in flat if c["attribute"] == "NumberOfFrames")
    assert frames["matched"] is False and frames["actual"] is None and "absent" in frames["reason"]


def test_too_few_images_and_other_modalities_do_not_match(study):
    few = evaluate_series(ct_context(study, count=3), default_rulesets(), builtin_templates())
    assert few.status is SeriesStatus.RULE_NOT_MATCHED and few.template is None
    clause = few.explanation()["rulesets"][0]["match"]["clauses"][3]["clauses"][0]
    assert clause["actual"] == [3] and clause["matched"] is False
    assert clause["reason"] == "no value of NumberOfSeriesRelatedInstances (3) >= 10"
    rs_eval = evaluate_series(SeriesContext(header(study[1].path), 1), default_rulesets(), builtin_templates())
    assert rs_eval.status is SeriesStatus.RULE_NOT_MATCHED


def test_multiframe_enhanced_ct_matches_through_number_of_frames(tmp_path):
    ct = synth.write_image_series(tmp_path, n_slices=12, rows=16, cols=16, multiframe=True)
    evaluation = evaluate_series(SeriesContext(header(ct.paths[0]), 1), default_rulesets(), builtin_templates())
    assert evaluation.status is SeriesStatus.RULE_MATCHED, evaluation.explanation()


def test_statuses_multiple_and_missing_template(study):
    context = ct_context(study)
    is_ct = Rule("Modality", "equals", "CT")
    two = [Ruleset("a", is_ct, "ct-body-lungs"), Ruleset("b", RuleGroup("or", (is_ct,)), "other")]
    evaluation = evaluate_series(context, two, builtin_templates())
    assert evaluation.status is SeriesStatus.MULTIPLE_RULES_MATCHED and evaluation.template is None
    assert evaluation.matched_rulesets == ["a", "b"]
    disabled = [two[0], Ruleset("b", is_ct, "other", enabled=False)]
    assert evaluate_series(context, disabled, builtin_templates()).status is SeriesStatus.RULE_MATCHED
    unknown = evaluate_series(context, [Ruleset("c", is_ct, "nowhere")], builtin_templates())
    assert unknown.status is SeriesStatus.NO_TEMPLATE_FOUND and "'nowhere' does not exist" in unknown.summary
    none = evaluate_series(context, [Ruleset("d", is_ct, None)], builtin_templates())
    assert none.status is SeriesStatus.NO_TEMPLATE_FOUND
    nothing = evaluate_series(context, [], builtin_templates())
    assert nothing.status is SeriesStatus.RULE_NOT_MATCHED


def test_identifying_values_are_masked_only_when_asked(study):
    ct = study[0]
    rules = Ruleset(
        "who",
        RuleGroup(
            "and",
            (
                Rule("PatientID", "equals", "PAT-4711"),
                Rule("PatientName", "contains", "doe", ignore_case=True),
                Rule("PatientBirthDate", "starts_with", "1960"),
                Rule("ReferringPhysicianName", "exists"),
                Rule("Modality", "equals", "CT"),
            ),
        ),
        "ct-body-lungs",
    )
    evaluation = evaluate_series(ct_context(study), [rules], builtin_templates())
    assert evaluation.status is SeriesStatus.RULE_MATCHED
    masked = json.dumps(evaluation.to_dict(mask_identifying=True))
    for secret in ("PAT-4711", "Doe", "doe", "19600102", "1960", "Smith"):
        assert secret not in masked
    assert MASK in masked and '"CT"' in masked  # non-identifying values stay readable
    clear = json.dumps(evaluation.to_dict(mask_identifying=False))
    assert "PAT-4711" in clear and "Doe^Jane" in clear and "19600102" in clear
    assert ct.patient.patient_id == "PAT-4711"


def test_identifying_set_follows_ps315_patient_module_and_person_names():
    from pydicom.tag import Tag

    assert is_identifying_tag(Tag("PatientBirthDate"))
    assert is_identifying_tag(Tag("PatientSex"))  # group 0010, Patient module
    assert is_identifying_tag(Tag("OperatorsName"))  # PN
    assert is_identifying_tag(Tag(0x0011, 0x1010))  # private
    assert is_identifying_tag(Tag("StudyDate"))  # PS3.15 table
    assert is_identifying_tag(Tag("InstitutionName"))
    assert is_identifying_tag(Tag("FrameOfReferenceUID"))
    assert is_identifying_tag(Tag(0x6000, 0x3000))  # overlay data, a repeating group
    assert not is_identifying_tag(Tag("Modality"))
    assert not is_identifying_tag(Tag("SOPClassUID"))
    assert not is_identifying_tag(Tag("SliceThickness"))


def test_template_problems_for_a_hand_picked_template(study):
    template = builtin_templates()["ct-body-lungs"]
    assert template_problems(template, ct_context(study)) == []
    problems = template_problems(template, SeriesContext(header(study[1].path), 1))
    assert any("needs modality CT" in p for p in problems)
    assert any("at least 10 images" in p for p in problems)


def test_context_from_file_reads_a_header_and_names_unreadable_files(study, tmp_path):
    from dicomflow.errors import DicomReadError

    ct = study[0]
    context = SeriesContext.from_file(ct.paths[0], instance_count=len(ct.paths))
    assert context.series_uid == ct.series_uid and "PixelData" not in context.dataset
    bad = tmp_path / "bad.dcm"
    bad.write_text("nope")
    with pytest.raises(DicomReadError, match="bad.dcm"):
        SeriesContext.from_file(bad)


def test_long_value_lists_are_shortened_in_explanations(study, monkeypatch):
    from dicomflow.core.rules import evaluate

    ct, rs, _ = study
    context = SeriesContext(header(rs.path))
    path = "ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]" \
        ".ContourImageSequence[*].ReferencedSOPInstanceUID"
    result = check(context, path, "equals", ct.sop_instance_uids[-1])
    assert result.matched and result.matched_value == ct.sop_instance_uids[-1]
    shown = result.to_dict()
    assert "actual_count" not in shown and shown["actual"] == ct.sop_instance_uids  # 12 ≤ limit: all listed
    monkeypatch.setattr(evaluate, "MAX_SHOWN_VALUES", 5)
    shown = check(context, path, "equals", "1.2.3").to_dict()
    assert shown["actual"] == ct.sop_instance_uids[:5] and shown["actual_count"] == 12
    assert "... 12 values" in shown["reason"]
