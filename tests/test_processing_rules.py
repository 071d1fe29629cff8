"""Rulesets and templates in the database, rules on catalogued series, manual template choice, dry run."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS, SeriesStatus, dry_run
from dicomflow.errors import InputError
from dicomflow.intake.services import import_paths
from dicomflow.processing import selectors, services
from dicomflow.processing.models import LogEntry, Ruleset, SeriesState, Template
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def builtins():
    services.ensure_builtin_templates()


def _import_series(tmp_path, name: str, modality: str = "CT", n_slices: int = 12, **kw) -> Series:
    info = write_image_series(tmp_path / name, patient=PatientSpec(f"RULES-{name}"), modality=modality,
                              n_slices=n_slices, rows=16, cols=16, seed=f"rules-{name}", **kw)
    import_paths([tmp_path / name], workers=1)
    return Series.objects.get(series_instance_uid=info.series_uid)


def test_builtin_definitions_are_loaded_once_and_valid():
    assert Template.objects.get(name=CT_BODY_LUNGS).core().processor == "builtin.ct_body_lungs"
    ruleset = Ruleset.objects.get(name="ct-images")
    assert ruleset.core().template == CT_BODY_LUNGS
    assert services.ensure_builtin_templates() == (0, 0)  # idempotent
    assert Template.objects.filter(name=CT_BODY_LUNGS).count() == 1


def test_definitions_are_validated_by_the_core_on_save():
    with pytest.raises(ValidationError, match="unknown operator"):
        Ruleset.objects.create(name="broken", definition={"match": {"attribute": "Modality", "operator": "eq",
                                                                    "value": "CT"}})
    with pytest.raises(ValidationError, match="processor"):
        Template.objects.create(name="no-processor", definition={"parameters": {}})
    assert not Ruleset.objects.filter(name="broken").exists()


def test_ct_series_matches_ct_body_lungs_with_explanation(tmp_path):
    series = _import_series(tmp_path, "ct")
    [state] = services.evaluate_series([series.id])
    assert state.status == SeriesStatus.RULE_MATCHED.value
    assert state.template.name == CT_BODY_LUNGS
    [ruleset] = state.explanation["rulesets"]
    assert ruleset["matched"] is True
    reasons = [c["reason"] for c in ruleset["match"]["clauses"] if "reason" in c]
    assert any("Modality value 'CT'" in r for r in reasons)
    assert LogEntry.objects.filter(series_id=series.id, message__contains="RULE_MATCHED").exists()


def test_too_few_slices_and_mr_do_not_match(tmp_path):
    short = _import_series(tmp_path, "short", n_slices=4)
    mr = _import_series(tmp_path, "mr", modality="MR")
    states = {s.series_id: s for s in services.evaluate_series([short.id, mr.id])}
    assert states[short.id].status == SeriesStatus.RULE_NOT_MATCHED.value
    assert states[mr.id].status == SeriesStatus.RULE_NOT_MATCHED.value
    assert states[mr.id].template is None
    assert "none of 1 enabled ruleset(s) matched" in states[mr.id].explanation["summary"]


def test_two_matching_rulesets_give_multiple_rules_matched(tmp_path):
    Ruleset.objects.create(name="any-ct", order=5, definition={
        "template": CT_BODY_LUNGS, "match": {"attribute": "Modality", "operator": "equals", "value": "CT"}})
    series = _import_series(tmp_path, "ct2")
    [state] = services.evaluate_series([series.id])
    assert state.status == SeriesStatus.MULTIPLE_RULES_MATCHED.value
    assert state.template is None
    assert sorted(state.explanation["matched_rulesets"]) == ["any-ct", "ct-images"]
    # disabling one makes the decision unique again
    Ruleset.objects.filter(name="any-ct").update(enabled=False)
    [state] = services.evaluate_series([series.id])
    assert state.status == SeriesStatus.RULE_MATCHED.value


def test_ruleset_without_known_template_gives_no_template_found(tmp_path):
    Ruleset.objects.filter(name="ct-images").update(enabled=False)
    Ruleset.objects.create(name="mr-brain", definition={
        "template": "mr-brain-seg", "match": {"attribute": "Modality", "operator": "equals", "value": "MR"}})
    series = _import_series(tmp_path, "mr2", modality="MR")
    [state] = services.evaluate_series([series.id])
    assert state.status == SeriesStatus.NO_TEMPLATE_FOUND.value
    assert "mr-brain-seg" in state.explanation["summary"]


def test_new_series_are_evaluated_once(tmp_path):
    series = _import_series(tmp_path, "fresh")
    SeriesState.objects.filter(series=series).delete()  # as if the import hook had not run yet
    states = services.evaluate_new_series()
    assert series.id in [s.series_id for s in states]
    assert services.evaluate_new_series() == []  # nothing new left
    assert selectors.series_states(SeriesStatus.RULE_MATCHED.value).filter(series=series).exists()


def test_template_chosen_by_hand_is_checked_against_requirements(tmp_path, django_user_model):
    user = django_user_model.objects.create_user("alice")
    Ruleset.objects.filter(name="ct-images").update(enabled=False)
    ct = _import_series(tmp_path, "ct3")
    mr = _import_series(tmp_path, "mr3", modality="MR")
    services.evaluate_series([ct.id, mr.id])
    assert SeriesState.objects.get(series=ct).status == SeriesStatus.RULE_NOT_MATCHED.value
    state = services.choose_template(ct.id, CT_BODY_LUNGS, user)
    assert (state.status, state.template.name, state.chosen_by) == (SeriesStatus.RULE_MATCHED.value, CT_BODY_LUNGS,
                                                                     user)
    assert state.explanation["chosen_by_hand"] is True
    [again] = services.evaluate_series([ct.id])  # a manual choice survives later evaluations ...
    assert (again.status, again.template.name) == (SeriesStatus.RULE_MATCHED.value, CT_BODY_LUNGS)
    [forced] = services.evaluate_series([ct.id], override_manual=True)  # ... unless asked to
    assert forced.status == SeriesStatus.RULE_NOT_MATCHED.value and forced.chosen_by is None
    with pytest.raises(InputError, match="needs modality CT"):
        services.choose_template(mr.id, CT_BODY_LUNGS, user)
    with pytest.raises(InputError, match="no template named"):
        services.choose_template(ct.id, "nope", user)


def test_dry_run_with_the_database_rules_explains_every_decision(tmp_path):
    """The stored rulesets, given to the core dry run: one explanation per series and ruleset, no writes."""
    Ruleset.objects.create(name="any-ct", order=5, definition={
        "template": CT_BODY_LUNGS, "match": {"attribute": "Modality", "operator": "equals", "value": "CT"}})
    write_image_series(tmp_path / "in" / "ct", patient=PatientSpec("DRY1"), n_slices=12, rows=16, cols=16, seed="d1")
    write_image_series(tmp_path / "in" / "mr", patient=PatientSpec("DRY2"), modality="MR", n_slices=12, rows=16,
                       cols=16, seed="d2")
    rulesets = [r.core() for r in Ruleset.objects.all()]
    templates = {t.name: t.core() for t in Template.objects.all()}
    before = SeriesState.objects.count()
    report = dry_run(tmp_path / "in", rulesets, templates)
    statuses = sorted(e.status.value for e in report.evaluations)
    assert statuses == [SeriesStatus.MULTIPLE_RULES_MATCHED.value, SeriesStatus.RULE_NOT_MATCHED.value]
    for evaluation in report.evaluations:
        explanation = evaluation.explanation()
        assert explanation["summary"]
        assert {r["ruleset"] for r in explanation["rulesets"]} == {"ct-images", "any-ct"}
        for r in explanation["rulesets"]:
            stack = [r["match"]]
            while stack:  # every clause, nested groups included, says why
                node = stack.pop()
                if "clauses" in node:
                    stack += node["clauses"]
                else:
                    assert node["reason"] and "matched" in node
    assert SeriesState.objects.count() == before


def test_evaluate_task_starts_jobs_only_for_templates_with_automatic_processing(tmp_path, settings):
    from dicomflow.processing import tasks
    from dicomflow.processing.models import Job

    ct = _import_series(tmp_path, "auto-task")
    mr = _import_series(tmp_path, "auto-mr", modality="MR")
    settings.DICOMFLOW_AUTO_PROCESS_PROJECT = "AUTO2"  # a default project alone switches nothing on
    settings.DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS = 0
    assert tasks.evaluate_series([ct.id, mr.id]) == {str(ct.id): SeriesStatus.RULE_MATCHED.value,
                                                     str(mr.id): SeriesStatus.RULE_NOT_MATCHED.value}
    assert not Job.objects.exists()
    Template.objects.filter(name=CT_BODY_LUNGS).update(auto_process=True)  # no auto_project: the default
    tasks.evaluate_series([ct.id, mr.id])
    job = Job.objects.get()
    assert (job.series_id, job.project_key, job.automatic, job.template.name) == (ct.id, "AUTO2", True, CT_BODY_LUNGS)
    tasks.evaluate_series([ct.id, mr.id])  # never twice
    assert Job.objects.count() == 1
