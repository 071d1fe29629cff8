"""Writes of accounts: users and API keys. Keys are made and checked by djangorestframework-api-key
(a random key, only its prefix and a hash stored); the key itself is returned once and never kept."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.utils import timezone

from dicomflow.accounts import audit
from dicomflow.accounts.actors import is_active_user, is_operator
from dicomflow.accounts.models import ApiKey, AuditAction
from dicomflow.errors import InputError, NotFoundError, PermissionDeniedError

CLINICAL_POOL_PERMISSION = ("projects", "view_clinical_pool")


def _may_manage_users(actor) -> bool:
    return is_operator(actor) or (is_active_user(actor) and actor.is_superuser)


def create_user(actor, username: str, *, email: str = "", password: str | None = None,
                clinical_pool: bool = False):
    """A web/API user (never staff). Without a password the account can use API keys only."""
    if not _may_manage_users(actor):
        raise PermissionDeniedError("only administrators may create users")
    username = (username or "").strip()
    if not username or len(username) > 150:
        raise InputError("a user name has 1-150 characters")
    User = get_user_model()
    if password is not None:
        from django.contrib.auth.password_validation import validate_password
        from django.core.exceptions import ValidationError

        try:
            validate_password(password, User(username=username, email=email or ""))
        except ValidationError as exc:
            raise InputError("the password is too weak: " + " ".join(exc.messages)) from None
    try:
        with transaction.atomic():
            user = User.objects.create_user(username, email=email or "", password=password)
            if password is None:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            if clinical_pool:
                app_label, codename = CLINICAL_POOL_PERMISSION
                user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    except IntegrityError:
        raise InputError(f"a user named '{username}' exists already") from None
    audit.record(actor, AuditAction.ROLE_CHANGE, obj=f"user #{user.pk}",
                 detail="user created" + (" with clinical-pool access" if clinical_pool else ""))
    return user


def get_user(username: str):
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is None:
        raise NotFoundError(f"no user named '{username}'")
    return user


def create_api_key(actor, user, *, name: str = "", expires_in_days: int | None = None) -> tuple[ApiKey, str]:
    """A new key for ``user`` (themselves, or any user for an administrator); returns (row, key)."""
    if not (is_active_user(actor) and (is_operator(actor) or actor.is_superuser or actor.pk == user.pk)):
        raise PermissionDeniedError("you may create API keys for yourself only")
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise InputError("an API key expires after 1 to 3650 days")
    expiry = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    row, key = ApiKey.objects.create_key(user=user, name=(name or "API key")[:50], expiry_date=expiry)
    audit.record(actor, AuditAction.API_KEY, obj=f"API key {row.prefix}", detail=f"created for user #{user.pk}")
    return row, key


def revoke_api_key(actor, prefix: str) -> ApiKey:
    row = ApiKey.objects.filter(prefix=prefix).select_related("user").first()
    allowed = row is not None and is_active_user(actor) and (
        is_operator(actor) or actor.is_superuser or row.user_id == actor.pk)
    if not allowed:
        raise NotFoundError("no such API key")
    if not row.revoked:
        row.revoked = True
        row.save(update_fields=["revoked"])
        audit.record(actor, AuditAction.API_KEY, obj=f"API key {row.prefix}", detail="revoked")
    return row


def user_from_api_key(key: str):
    """The active user a valid, unexpired, unrevoked key belongs to; None otherwise."""
    if not key or "." not in key or len(key) > 200:
        return None
    try:
        row = ApiKey.objects.get_from_key(key)
    except ApiKey.DoesNotExist:
        return None
    if row.has_expired or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5):
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user
