"""Keyed pseudonyms: UIDs, patient pseudonyms and per-subject date offsets from one project key.

HMAC-SHA256 with the project secret makes every value stable across runs and uploads of the same
project and unrelated between projects; nothing random is involved, so two runs give identical
bytes. Each purpose has its own domain prefix so the outputs cannot be correlated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date, timedelta
from functools import lru_cache

from pydicom._uid_dict import UID_dictionary

from dicomflow.core.deid.options import Options


def is_well_known_uid(uid: str) -> bool:
    """Registered DICOM UIDs (SOP classes, transfer syntaxes, coding schemes...) are kept."""
    return uid in UID_dictionary


class Pseudonymizer:
    """Derive every replacement value of one project from its secret."""

    def __init__(self, secret: bytes, options: Options, subject_ids: dict[str, str] | None = None):
        self._secret = secret
        self._options = options
        self._subject_ids = dict(subject_ids or {})
        self.uid = lru_cache(maxsize=65536)(self._uid)
        self.date_offset = lru_cache(maxsize=4096)(self._date_offset)

    def _mac(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def _uid(self, uid: str) -> str:
        """``2.25.<128-bit int>`` (or ``<root>.<int>``), at most 64 characters."""
        number = int.from_bytes(self._mac("uid", uid)[:16], "big")
        root = self._options.uid_root or "2.25"
        room = 64 - len(root) - 1
        digits = str(number)
        if len(digits) > room:
            digits = str(number % 10**room)
        return f"{root}.{digits}"

    @staticmethod
    def identity(patient_id: str, issuer: str = "") -> str:
        """The keyed identity of a patient: Patient ID, qualified by its issuer when there is one.

        Without an issuer the identity is the Patient ID alone (pseudonyms of existing projects
        stay what they were); with one, two patients sharing an ID get different pseudonyms.
        """
        return f"{patient_id}\x00{issuer}" if issuer else patient_id

    def patient_pseudonym(self, patient_id: str, issuer: str = "") -> str:
        """The study subject ID when one was supplied, otherwise a keyed pseudonym.

        ``subject_ids`` may be keyed by "<Patient ID>\\x00<issuer>" or by the Patient ID alone.
        """
        identity = self.identity(patient_id, issuer)
        if identity in self._subject_ids:
            return self._subject_ids[identity]
        if patient_id in self._subject_ids:
            return self._subject_ids[patient_id]
        code = base64.b32encode(self._mac("patient", identity)[:10]).decode("ascii")
        return f"{self._options.pseudonym_prefix}{code[:12]}"

    def _date_offset(self, patient_id: str, issuer: str = "") -> int:
        """Days to add to every date of this subject, inside the configured range."""
        lo, hi = self._options.date_shift_days
        span = hi - lo + 1
        return lo + int.from_bytes(self._mac("date", self.identity(patient_id, issuer))[:8], "big") % span


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (YYYYMMDD); None when it is not a valid date."""
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        shifted = date(int(value[:4]), int(value[4:6]), int(value[6:])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of one DT value, keeping time and offset; None if it has no full date."""
    value = value.strip()
    head = shift_da(value[:8], days)
    if head is None:
        return None
    return head + value[8:]
