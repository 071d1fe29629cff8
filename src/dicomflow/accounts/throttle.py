"""Login throttling (django-axes): too many failed attempts lock a user name, and separately the
address they came from, for ``DICOMFLOW_LOGIN_LOCKOUT_MINUTES``.

Every way in is covered: the web login (/login/), the admin login, the SDK's token endpoint and the
password dialog of the uploader (all call ``authenticate(request, ...)``, which runs
:class:`ThrottledBackend`), and ``X-Api-Key`` (``accounts.authentication`` asks :func:`locked` and
reports failures through :func:`key_failed`). While locked, even the right password or key is refused.
An administrator lifts a lockout early with ``dicomflow manage axes_reset_username NAME`` (or
``axes_reset_ip ADDRESS``, ``axes_reset``).
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string


class ThrottledBackend(AxesStandaloneBackend):
    """django-axes' check in front of the password check; calls without a request (internal code,
    the test client's ``login``) are not HTTP attempts and are left to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def message() -> str:
    minutes = settings.DICOMFLOW_LOGIN_LOCKOUT_MINUTES
    return (f"Too many failed login attempts for this account or from this address: logging in is blocked "
            f"for {minutes:g} minutes. Try again later, or ask an administrator to lift the lock.")


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """What a locked-out attempt gets (AXES_LOCKOUT_CALLABLE): 429 with a clear message; problem
    details for the API, the login page with the message for people."""
    retry = str(int(settings.DICOMFLOW_LOGIN_LOCKOUT_MINUTES * 60))
    if request.path.startswith("/api/") or "json" in request.headers.get("Accept", "") \
            or request.content_type == "application/json":
        response = JsonResponse({"type": "about:blank", "title": "Too many failed login attempts", "status": 429,
                                 "detail": message()}, status=429, content_type="application/problem+json")
    else:
        response = HttpResponse(render_to_string("web/locked_out.html", {"message": message()}, request=request),
                                status=429)
    response["Retry-After"] = retry
    return response


def key_credentials(key: str) -> dict:
    """An API key attempt, keyed by the key's public prefix (as the user name) and the address."""
    prefix = key.partition(".")[0][:32] if "." in key else "?"
    return {"username": f"api-key:{prefix}"}


def locked(request, credentials: dict) -> bool:
    return not AxesProxyHandler.is_allowed(request, credentials)


def key_failed(request, credentials: dict) -> None:
    AxesProxyHandler.user_login_failed(sender=key_failed, credentials=credentials, request=request)
