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


def _logged_in(sender, request=None, user=None, **kwargs) -> None:
    """A login with the generated first admin password: the session must change it first."""
    from dicomflow.accounts import bootstrap
    from dicomflow.accounts.middleware import SESSION_FLAG

    if request is None or user is None or not user.is_superuser:
        return
    initial = bootstrap.initial_password()
    if initial and user.check_password(initial):
        request.session[SESSION_FLAG] = True


def _user_saved(sender, instance=None, **kwargs) -> None:
    """A superuser's password set to anything else than the generated one: the file goes."""
    from dicomflow.accounts import bootstrap

    new = getattr(instance, "_password", None)  # the raw password, set by set_password() until saved
    if new is None or not instance.is_superuser:
        return
    initial = bootstrap.initial_password()
    if initial and new != initial:
        bootstrap.forget_initial_password()


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_in, user_login_failed
    from django.db.models.signals import post_save

    user_login_failed.connect(_login_failed, dispatch_uid="dicomflow-login-failed")
    user_logged_in.connect(_logged_in, dispatch_uid="dicomflow-initial-password")
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="dicomflow-initial-password-changed")
