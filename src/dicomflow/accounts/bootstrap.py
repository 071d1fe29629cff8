"""The first account: the admin `make run` / `dicomflow serve` creates on a fresh installation.

Its generated password is written to ``$DICOMFLOW_HOME/keys/initial_admin_password`` (mode 600).
The first login with it must choose a new password (``accounts.middleware``); once the password
has changed, by any means, the file is deleted (``accounts.signals``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

CHANGE_MESSAGE = ("You logged in with the generated first password: choose your own password before going on "
                  "(the generated one is then deleted from the server's disk).")


def initial_password_path() -> Path:
    return settings.KEYS_DIR / "initial_admin_password"


def initial_password() -> str | None:
    try:
        return initial_password_path().read_text().strip() or None
    except OSError:
        return None


def forget_initial_password() -> None:
    initial_password_path().unlink(missing_ok=True)


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
    path = initial_password_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password
