"""What the research pages share: the project of the URL checked for a capability, service errors
as HTTP answers (a page shows 404/403; a JSON endpoint answers a small problem document)."""

from __future__ import annotations

import functools
import json

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse

from dicomflow.errors import (
    ConfirmationRequiredError,
    DicomflowError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
)
from dicomflow.projects.selectors import project_for


def as_http(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the service errors a page shows as such: NotFoundError as 404,
    PermissionDeniedError as 403."""
    try:
        return fn(*args, **kwargs)
    except NotFoundError as exc:
        raise Http404(str(exc)) from None
    except PermissionDeniedError as exc:
        raise PermissionDenied(str(exc)) from None


def project_or_404(request, key: str, capability: str):
    """The project ``key`` if ``request.user`` may ``capability`` there: 404 for outsiders, 403 for members."""
    return as_http(project_for, request.user, key, capability)


def error_status(exc: DicomflowError) -> int:
    if isinstance(exc, PermissionDeniedError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConfirmationRequiredError):
        return 409
    if isinstance(exc, InputError):
        return 400
    return 500


def json_endpoint(view):
    """A JSON view: service errors become ``{"detail", "status"}`` with their HTTP status, and a user
    whose session expired gets 401 (not the login page's HTML) so the page can ask for the password."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse({"detail": "your session has expired; log in again", "status": 401}, status=401)
        try:
            return view(request, *args, **kwargs)
        except (Http404, PermissionDenied) as exc:
            code = 404 if isinstance(exc, Http404) else 403
            return JsonResponse({"detail": str(exc) or "not found", "status": code}, status=code)
        except DicomflowError as exc:
            code = error_status(exc)
            return JsonResponse({"detail": str(exc), "status": code}, status=code)

    return wrapper


def json_body(request) -> dict:
    """The request's JSON object (InputError when it is not one)."""
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise InputError("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise InputError("the request body must be a JSON object")
    return data
