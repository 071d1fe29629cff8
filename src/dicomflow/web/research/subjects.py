"""``/projects/<key>/subjects/``: enrol subjects, add their events and upload slots, link studies to
slots. Every change is one service call; a slot holding a study asks before it is replaced."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from dicomflow.errors import ConfirmationRequiredError, DicomflowError, InputError
from dicomflow.projects import selectors, services
from dicomflow.projects.models import Capability, Sex
from dicomflow.web.research.context import remember
from dicomflow.web.research.http import as_http, project_or_404


@login_required
def subjects(request, key: str):
    project = project_or_404(request, key, Capability.VIEW)
    remember(request, project)
    confirm = None
    if request.method == "POST":
        try:
            done = as_http(_act, request, project)
            messages.success(request, done)
            return redirect(request.path)
        except ConfirmationRequiredError as exc:
            confirm = {"message": str(exc), "slot": request.POST.get("slot"), "study": request.POST.get("study")}
        except DicomflowError as exc:
            messages.error(request, str(exc))
    can_manage = selectors.can(request.user, project, Capability.MANAGE)
    return render(request, "web/research/subjects.html", {
        "project": project, "subjects": selectors.subjects_overview(project), "confirm": confirm,
        "can_manage": can_manage, "can_upload": selectors.can(request.user, project, Capability.UPLOAD),
        "studies": selectors.linkable_studies(project) if can_manage else [], "sexes": Sex.choices[:3],
        "nav": "subjects",
    })


def _act(request, project) -> str:
    """Carry out the posted action through its service; the message to show."""
    data, user = request.POST, request.user
    action = data.get("action")
    if action == "enrol":
        subject = services.enrol_subject(
            user, project, study_subject_id=data.get("study_subject_id", ""), expected_sex=data.get("sex", ""),
            expected_birth_date=data.get("birth_date") or None, expected_birth_year=data.get("birth_year") or None)
        return f"Subject {subject.study_subject_id} enrolled."
    if action == "event":
        event = services.add_event(user, selectors.subject_in(project, data.get("subject")), data.get("name", ""),
                                   date=data.get("date") or None)
        return f"Event {event.name} added."
    if action == "slot":
        slot = services.add_slot(user, selectors.event_in(project, data.get("event")), data.get("name", ""))
        return f"Upload slot {slot.name} added."
    if action == "link":
        slot = selectors.slot_in(project, data.get("slot"))
        study = selectors.project_study(project, data.get("study"))
        services.link_study(user, slot, study, confirm=data.get("confirm") == "1")
        return f"Study linked to {slot.event.name} / {slot.name}."
    raise InputError("unknown action")
