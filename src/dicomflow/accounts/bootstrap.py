"""The first account: the admin `make run` / `dicomflow serve` creates on a fresh installation."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model


def ensure_admin_account(username: str = "admin") -> str | None:
    """Create a superuser with a random password on first run; return the password, or None if it exists.

    The password is written to ``$DICOMFLOW_HOME/keys/initial_admin_password`` (mode 600) so it can be
    found again; it is never logged.
    """
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    path = settings.KEYS_DIR / "initial_admin_password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password
