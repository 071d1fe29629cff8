"""Templates and rulesets: lists, forms, the rule builder with its dry run before saving."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from dicomflow.core.checks.findings import Code
from dicomflow.errors import DicomflowError, InputError, NotFoundError, PermissionDeniedError
from dicomflow.processing import services
from dicomflow.processing.models import Ruleset, Template
from dicomflow.processing.processors import processor_names
from dicomflow.projects.selectors import visible_series
from dicomflow.web.desk import rights
from dicomflow.web.desk.common import attempt, back, desk_view
from dicomflow.web.desk.definition_forms import (
    ROI_TYPES,
    automatic_from_post,
    ruleset_from_post,
    template_from_post,
    template_initial,
)

ATTRIBUTES = ["Modality", "SOPClassUID", "ImageType", "SeriesDescription", "StudyDescription", "BodyPartExamined",
              "ProtocolName", "Manufacturer", "ManufacturerModelName", "StationName", "SliceThickness",
              "NumberOfSeriesRelatedInstances", "NumberOfFrames", "ConvolutionKernel", "PatientPosition",
              "StructureSetLabel", "ContrastBolusAgent", "ReferringPhysicianName"]
OPERATORS = [("equals", "equals"), ("not_equals", "does not equal"), ("contains", "contains"),
             ("not_contains", "does not contain"), ("starts_with", "starts with"), ("ends_with", "ends with"),
             ("regex", "matches (regular expression)"), ("gt", ">"), ("gte", "≥"), ("lt", "<"), ("lte", "≤"),
             ("in", "is one of (comma-separated)"), ("exists", "is present"), ("not_exists", "is absent")]


def _see(request) -> None:
    rights.require(rights.may_see_definitions(request.user), "the processing templates and rulesets")


@desk_view
def template_list(request):
    _see(request)
    return render(request, "web/desk/templates.html", {
        "templates": Template.objects.order_by("name"), "may_add": rights.may_edit(request.user, "template", "add"),
        "default_project": settings.DICOMFLOW_AUTO_PROCESS_PROJECT,
        "tab": "templates", "nav": "desk-definitions",
    })


@desk_view
def template_form(request, name: str | None = None):
    _see(request)
    row = None
    if name is not None:
        row = Template.objects.filter(name=name).first()
        if row is None:
            raise Http404(f"no template named '{name[:100]}'")
    may_save = rights.may_edit(request.user, "template", "change" if row else "add")
    initial = template_initial(row.name, row.definition) if row else template_initial("", {
        "processor": "builtin.ct_body_lungs", "requires": {"modalities": ["CT"]}})
    automatic = (row.auto_process, row.auto_project) if row else (False, "")
    if request.method == "POST":
        try:
            new_name, definition = template_from_post(request.POST)
        except InputError as exc:
            messages.error(request, str(exc))
        else:
            initial = template_initial(new_name, definition)
            automatic = automatic_from_post(request.POST)
            auto = {"auto_process": automatic[0], "auto_project": automatic[1]}
            saved = (attempt(request, services.update_template, request.user, row.name, new_name=new_name,
                             definition=definition, **auto) if row else
                     attempt(request, services.create_template, request.user, name=new_name, definition=definition,
                             **auto))
            if saved is not None:
                messages.success(request, f"Template '{saved.name}' saved.")
                return back(request, reverse("desk-templates"))
    return render(request, "web/desk/template_form.html", {
        "row": row, "t": initial, "processors": processor_names(), "roi_types": ROI_TYPES,
        "codes": [c.value for c in Code], "may_save": may_save, "tab": "templates", "nav": "desk-definitions",
        "next": request.GET.get("next", ""), "auto_process": automatic[0], "auto_project": automatic[1],
        "auto_projects": _project_choices(request.user, automatic[1]),
        "default_project": settings.DICOMFLOW_AUTO_PROCESS_PROJECT,
    })


def _project_choices(user, current: str) -> list[str]:
    """Projects the user may name for automatic processing (Manage there), and the current one."""
    keys = list(rights.managed_projects(user).values_list("key", flat=True))
    return keys if not current or current in keys else [current, *keys]


def _delete(request, delete, kind: str, name: str, listing: str):
    if request.method == "POST":
        try:
            delete(request.user, name)
        except (NotFoundError, PermissionDeniedError):
            raise
        except DicomflowError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{kind} '{name}' deleted.")
    return HttpResponseRedirect(reverse(listing))


@desk_view
def template_delete(request, name: str):
    _see(request)
    return _delete(request, services.delete_template, "Template", name, "desk-templates")


def _automatic_templates() -> dict[str, str]:
    """``{template name: project key}`` of the templates that process a match automatically."""
    return {t.name: services.automatic_project(t) or "?" for t in Template.objects.filter(auto_process=True)}


@desk_view
def ruleset_list(request):
    _see(request)
    automatic = _automatic_templates()
    rulesets = list(Ruleset.objects.order_by("order", "name"))
    for ruleset in rulesets:  # the project its template processes a match into automatically ('' = a person sends)
        ruleset.auto_key = automatic.get(ruleset.definition.get("template") or "", "")
    return render(request, "web/desk/rulesets.html", {
        "rulesets": rulesets, "may_add": rights.may_edit(request.user, "ruleset", "add"),
        "tab": "rulesets", "nav": "desk-definitions",
    })


def _series_choices(user) -> list:
    return list(visible_series(user).select_related("study__patient").order_by("-created_at")[:200])


@desk_view
def ruleset_form(request, name: str | None = None):
    """The rule builder: "Dry run" shows what the edited (unsaved) ruleset decides for a chosen
    series; "Save" stores it."""
    _see(request)
    row = None
    if name is not None:
        row = Ruleset.objects.filter(name=name).first()
        if row is None:
            raise Http404(f"no ruleset named '{name[:100]}'")
    may_save = rights.may_edit(request.user, "ruleset", "change" if row else "add")
    if row:
        values = {"name": row.name, "description": row.definition.get("description", ""), "enabled": row.enabled,
                  "order": row.order, "template": row.definition.get("template") or "", "match": row.definition["match"]}
    else:
        values = {"name": "", "description": "", "enabled": True, "order": Ruleset.objects.count(), "template": "",
                  "match": {"and": [{"attribute": "Modality", "operator": "equals", "value": "CT"}]}}
    outcome, series_uid = None, request.POST.get("series_uid", "") or request.GET.get("series", "")
    if request.method == "POST":
        try:
            new_name, definition, enabled, order = ruleset_from_post(request.POST)
        except InputError as exc:
            messages.error(request, str(exc))
        else:
            values = {"name": new_name, "description": definition["description"], "enabled": enabled, "order": order,
                      "template": definition["template"], "match": definition["match"]}
            if request.POST.get("action") == "dry-run":
                if not series_uid:
                    messages.error(request, "Choose a series for the dry run.")
                else:
                    outcome = attempt(request, services.rules_dry_run, request.user, series_uid,
                                      [{**definition, "name": new_name or "this ruleset", "enabled": True}])
            else:
                saved = (attempt(request, services.update_ruleset, request.user, row.name, new_name=new_name,
                                 definition=definition, enabled=enabled, order=order) if row else
                         attempt(request, services.create_ruleset, request.user, name=new_name,
                                 definition=definition, enabled=enabled, order=order))
                if saved is not None:
                    messages.success(request, f"Ruleset '{saved.name}' saved.")
                    return HttpResponseRedirect(reverse("desk-rulesets"))
    return render(request, "web/desk/ruleset_form.html", {
        "row": row, "v": values, "match_json": json.dumps(values["match"]), "outcome": outcome,
        "series_uid": series_uid, "series_choices": _series_choices(request.user),
        "templates": Template.objects.order_by("name").values_list("name", flat=True),
        "automatic": _automatic_templates(),
        "attributes": ATTRIBUTES, "operators": OPERATORS, "may_save": may_save, "tab": "rulesets",
        "nav": "desk-definitions",
    })


@desk_view
def ruleset_delete(request, name: str):
    _see(request)
    return _delete(request, services.delete_ruleset, "Ruleset", name, "desk-rulesets")
