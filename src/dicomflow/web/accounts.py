"""The web app's own account pages: log in, log out and change password (every user, not only
staff: the admin keeps its own login), and the audit log (administrators).

Login is Django's ``LoginView``: ``?next=`` brings the user back to the page their expired session
left, and a ``next`` pointing at another host is ignored. Failed attempts are audited by the
``user_login_failed`` signal (``dicomflow.accounts.signals``), whatever form they came through.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import render
from django.urls import reverse_lazy

from dicomflow.accounts.models import AuditAction
from dicomflow.accounts.selectors import audit_entries
from dicomflow.errors import PermissionDeniedError

AUDIT_PAGE = 50
AUDIT_FILTERS = ("action", "project", "user")


class LoginView(auth_views.LoginView):
    template_name = "web/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """POST only (a link or a prefetch cannot log anyone out); then back to the login page."""


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "web/password_change.html"
    success_url = reverse_lazy("password_change_done")
    extra_context = {"nav": "password"}


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "web/password_change_done.html"
    extra_context = {"nav": "password"}


@login_required
def audit(request):
    """The audit log, newest first, filtered by action, project key and user name (exact)."""
    filters = {name: request.GET.get(name, "").strip() for name in AUDIT_FILTERS}
    try:
        entries = audit_entries(request.user, action=filters["action"] or None, project=filters["project"] or None,
                                username=filters["user"] or None)
    except PermissionDeniedError as exc:
        raise PermissionDenied(str(exc)) from None
    page = Paginator(entries, AUDIT_PAGE).get_page(request.GET.get("page"))
    return render(request, "web/audit.html", {
        "page": page, "filters": filters, "actions": AuditAction.choices, "labels": dict(AuditAction.choices),
        "nav": "audit",
    })
