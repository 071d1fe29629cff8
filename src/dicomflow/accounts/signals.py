"""Failed logins are audited (the user name tried is kept only when such a user exists)."""

from __future__ import annotations


def _login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    from django.contrib.auth import get_user_model

    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction, AuditOutcome

    name = (credentials or {}).get("username") or ""
    user = get_user_model().objects.filter(username=name).first() if name else None

    class _Tried:  # the account tried, never a free-text guess that could be a patient's name
        def get_username(self):
            return user.get_username() if user else "(unknown user)"

    audit.record(_Tried(), AuditAction.LOGIN_FAILED, outcome=AuditOutcome.DENIED,
                 obj=f"user #{user.pk}" if user else "", detail="wrong user name or password")


def connect() -> None:
    from django.contrib.auth.signals import user_login_failed

    user_login_failed.connect(_login_failed, dispatch_uid="dicomflow-login-failed")
