"""The first admin must replace the generated password before doing anything else.

``dicomflow ensure-admin`` (``accounts.bootstrap``) writes the generated password to
``$DICOMFLOW_HOME/keys/initial_admin_password``. Logging in with it marks the session
(``accounts.signals``); this middleware then sends every page to /password/ (API calls get 403)
until the password is changed, which deletes the file (``accounts.signals``).
"""

from __future__ import annotations

import time

from django.http import JsonResponse
from django.shortcuts import redirect

from dicomflow.accounts import bootstrap

SESSION_FLAG = "dicomflow_must_change_password"
ALLOWED = ("/password/", "/logout/", "/login/", "/static/", "/admin/password_change/", "/admin/logout/",
           "/favicon.ico")


class PasswordChangeRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        if session is not None and session.get(SESSION_FLAG) and request.user.is_authenticated:
            if not bootstrap.initial_password_path().exists():  # changed meanwhile (CLI, admin)
                del session[SESSION_FLAG]
            elif not request.path.startswith(ALLOWED):
                if request.path.startswith("/api/"):
                    return JsonResponse({"type": "about:blank", "title": "Password change required", "status": 403,
                                         "detail": bootstrap.CHANGE_MESSAGE}, status=403,
                                        content_type="application/problem+json")
                return redirect("password_change")
        return self.get_response(request)


REFRESHED = "dicomflow_refreshed"
REFRESH_EVERY = 300  # seconds


class IdleSessionMiddleware:
    """Sessions end after SESSION_COOKIE_AGE (DICOMFLOW_SESSION_IDLE_HOURS) WITHOUT a request: a
    logged-in session's expiry is pushed back when it was last pushed more than 5 minutes ago.

    Like SESSION_SAVE_EVERY_REQUEST to within 5 minutes, without a database write and a new cookie
    on every request (the uploader's parallel chunk requests would each set it again)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        if session is not None and user is not None and user.is_authenticated and session.session_key:
            now = int(time.time())
            if now - int(session.get(REFRESHED, 0)) > REFRESH_EVERY:
                session[REFRESHED] = now
        return response
