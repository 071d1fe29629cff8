"""``/projects/<key>/upload/``: the RT-aware uploader. Headers are read in the browser
(``static/web/research/uploader.js``); the files travel over the resumable upload API into the
project (``POST /api/uploads/`` with ``project`` and ``subject``). The server side here is what the
page cannot do alone: record a sanity override, link the uploaded study to the slot (Finish), and
log in again when the session expired during an upload."""

from __future__ import annotations

from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from dicomflow.errors import InputError
from dicomflow.intake.resumable import UploadLimits
from dicomflow.projects import selectors, services
from dicomflow.projects.models import Capability
from dicomflow.web.research.context import remember
from dicomflow.web.research.http import as_http, json_body, json_endpoint, project_or_404


@login_required
def uploader(request, key: str):
    project = project_or_404(request, key, Capability.UPLOAD)
    remember(request, project)
    chosen = request.GET.get("slot")
    if chosen:
        as_http(selectors.slot_in, project, chosen)
    limits = UploadLimits.from_env()
    return render(request, "web/research/uploader.html", {
        "project": project, "slots": selectors.upload_slots(project), "chosen_slot": chosen or "",
        "limits": limits, "chunk": min(limits.max_chunk, 4 * 1024 * 1024), "nav": "research-upload",
    })


@require_POST
@json_endpoint
def override(request, key: str):
    """The Issues dialog's override: the kinds of conflict and the reason, recorded and audited."""
    project = project_or_404(request, key, Capability.UPLOAD)
    data = json_body(request)
    slot = selectors.slot_in(project, data.get("slot"))
    kinds = services.override_upload_conflicts(request.user, project, slot.event.subject, data.get("conflicts") or [],
                                               str(data.get("reason") or ""))
    return JsonResponse({"overridden": kinds})


@require_POST
@json_endpoint
def finish(request, key: str):
    """Finish: link the project's copy of the uploaded study to the slot (409 asks to confirm replacing)."""
    project = project_or_404(request, key, Capability.UPLOAD)
    data = json_body(request)
    slot = selectors.slot_in(project, data.get("slot"))
    if not data.get("session"):
        raise InputError("name the upload session to finish")
    study = selectors.uploaded_copy(request.user, project, data["session"])
    slot = services.link_study(request.user, slot, study, confirm=bool(data.get("confirm")))
    return JsonResponse({"slot": slot.pk, "study": study.study_instance_uid, "linked": True})


@require_GET
def session_state(request):
    """Whether the browser's session is still logged in (the uploader asks after a 401/403)."""
    user = request.user
    return JsonResponse({"authenticated": user.is_authenticated,
                         "username": user.get_username() if user.is_authenticated else ""})


@require_POST
def reauthenticate(request):
    """Log in again from the password dialog without leaving the page; answers the new CSRF token.

    Only the user the page was opened for may come back this way (the page sends that name)."""
    try:
        data = json_body(request)
    except InputError as exc:
        return JsonResponse({"detail": str(exc), "status": 400}, status=400)
    user = authenticate(request, username=str(data.get("username") or ""), password=str(data.get("password") or ""))
    if user is None or not user.is_active:
        return JsonResponse({"detail": "wrong password", "status": 401}, status=401)
    login(request, user)
    return JsonResponse({"csrf": get_token(request), "username": user.get_username()})
