"""Identifying values collected from a source object, for cleaning and for the leak scan.

Collected before anything is changed: name parts (every PN), IDs (attributes named *ID, *Number,
*Identifier with text VRs), dates (DA and the date part of DT), replaced UIDs, and phrases (address,
telephone, institution and removed free text). Only what the engine does NOT keep verbatim is
collected, so a retained value (e.g. dates under the Full Dates option) is not a finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE", "UR"})
_WORD = re.compile(r"[0-9A-Za-z\u00C0-\u024F]+")
_ID_KEYWORD = re.compile(r"(ID|IDs|Number|Numbers|Identifier|Locator)$")
_PHRASE_KEYWORD = re.compile(
    r"(Address|Telephone|Telecom|Residence|InstitutionName|DepartmentName|StationName|"
    r"Organization|Comments|History|Alerts|Allergies|Occupation|Religious|BranchOfService|Rank)"
)
MIN_TOKEN = 3
MIN_PHRASE = 6


@dataclass
class IdentifyingValues:
    tokens: set[str] = field(default_factory=set)  # upper-case words: name parts, IDs
    dates: set[str] = field(default_factory=set)  # YYYYMMDD
    uids: set[str] = field(default_factory=set)
    phrases: set[str] = field(default_factory=set)  # upper-case free text

    @property
    def ascii_only(self) -> bool:
        """True when every word and phrase is plain ASCII (one decoding of the bytes suffices)."""
        return all(t.isascii() for t in self.tokens) and all(p.isascii() for p in self.phrases)

    def add_name(self, value: str) -> None:
        for word in _WORD.findall(value):
            if len(word) >= MIN_TOKEN:
                self.tokens.add(word.upper())

    def add_id(self, value: str) -> None:
        value = value.strip()
        if " " not in value and len(value) >= MIN_TOKEN and not (value.isdigit() and len(value) < 4):
            self.tokens.add(value.upper())
        for word in _WORD.findall(value):
            if len(word) >= 4 or (len(word) >= MIN_TOKEN and not word.isdigit()):
                self.tokens.add(word.upper())

    def add_date(self, value: str) -> None:
        value = value.strip()
        if len(value) >= 8 and value[:8].isdigit():
            self.dates.add(value[:8])

    def add_phrase(self, value: str) -> None:
        value = " ".join(value.split()).upper()
        if len(value) >= MIN_PHRASE:
            self.phrases.add(value)

    def merge(self, other: IdentifyingValues) -> None:
        self.tokens |= other.tokens
        self.dates |= other.dates
        self.uids |= other.uids
        self.phrases |= other.phrases

    def collect(self, keyword: str, vr: str, value: str) -> None:
        """File one source value (already known not to be kept verbatim) under its class."""
        if not value:
            return
        if vr == "UI":
            self.uids.add(value.strip("\x00 "))
        elif vr in ("DA", "DT"):
            self.add_date(value)
        elif vr == "PN":
            self.add_name(value)
        elif vr in TEXT_VRS:
            if _ID_KEYWORD.search(keyword):
                self.add_id(value)
            elif _PHRASE_KEYWORD.search(keyword) or vr in ("LT", "ST", "UT"):
                self.add_phrase(value)
