"""Strict reading of environment variables: a bad value is one clear error, never a silent default.

``dicomflow.settings`` reads every variable through an :class:`Environment`; a value that does not
parse raises :class:`~dicomflow.errors.ConfigurationError` whose one-line message names the
variable and what it accepts (``DICOMFLOW_SCP_PORT='abc' is not valid: expected a whole number
from 0 to 65535``). Unset and empty variables mean the default. Secrets and URLs that may carry
passwords are never repeated in a message (``secret=True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dicomflow.errors import ConfigurationError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class Environment:
    """Typed, validated reads of a mapping of variables (settings passes ``os.environ``: core
    code never reads the process environment itself)."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def raw(self, name: str) -> str | None:
        """The stripped value, or None when unset or empty."""
        value = self.environ.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def invalid(self, name: str, expected: str, secret: bool = False) -> ConfigurationError:
        shown = "" if secret else f"={self.raw(name)!r}"
        return ConfigurationError(f"{name}{shown} is not valid: expected {expected}")

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return default if value is None else value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise self.invalid(name, f"one of {', '.join(TRUE_WORDS)} (on) or {', '.join(FALSE_WORDS)} (off)")

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.invalid(name, "a whole number" + _bounds(minimum, maximum))
        return number

    def number(self, name: str, default: float, minimum: float | None = None, positive: bool = False) -> float:
        """A finite decimal number; ``positive`` excludes zero, ``minimum`` is inclusive."""
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = None
        bad = (number is None or number != number or number in (float("inf"), float("-inf"))
               or (positive and number <= 0) or (minimum is not None and number < minimum))
        if bad:
            raise self.invalid(name, "a number greater than 0" if positive else "a number" + _bounds(minimum, None))
        return float(number)  # type: ignore[arg-type]

    def choice(self, name: str, default: str, choices: Iterable[str], case_sensitive: bool = False) -> str:
        choices = tuple(choices)
        value = self.raw(name)
        if value is None:
            return default
        for option in choices:
            if value == option or (not case_sensitive and value.lower() == option.lower()):
                return option
        raise self.invalid(name, f"one of {', '.join(choices)}")

    def items(self, name: str, default: Iterable[str] = ()) -> list[str]:
        """A comma-separated list; blanks around and between commas are dropped."""
        value = self.raw(name)
        if value is None:
            return list(default)
        return [part.strip() for part in value.split(",") if part.strip()]


def _bounds(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" of at least {minimum}"
    if maximum is not None:
        return f" of at most {maximum}"
    return ""
