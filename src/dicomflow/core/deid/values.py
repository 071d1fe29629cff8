"""Identifying values collected from a source object, for cleaning and for the leak scan.

Collected before anything is changed: name parts (every PN), IDs (attributes named *ID, *Number,
*Identifier with text VRs), dates (DA and the date part of DT), replaced UIDs, and phrases (address,
telephone, institution and removed free text). Only what the engine does NOT keep verbatim is
collected, so a retained value (e.g. dates under the Full Dates option) is not a finding.

An identity is also recognised in its other written forms (issue 13):
- name parts of any length from two letters ("Wu", "Li"), and the parts written together
  ("DoeJane", "JaneDoe");
- case and diacritics folded, with the German transliterations both ways (Schrödinger =
  Schroedinger, Wüst = Wuest = Wust): every word is compared in its ``fold`` forms;
- IDs with separators ("QX-778-1234"): ``ids`` keeps the IDs as letters and digits only, and text is
  compared after removing the separators between its alphanumeric runs;
- non-Latin scripts (CJK, Cyrillic, Arabic...) by whole word and by substring (``scripts``): such
  text has no spaces between words, so "山田" must be found inside "山田太郎様".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE", "UR"})
WORD = re.compile(r"[^\W_]+")  # letters and digits of any script
_ID_KEYWORD = re.compile(r"(ID|IDs|Number|Numbers|Identifier|Locator)$")
_PHRASE_KEYWORD = re.compile(
    r"(Address|Telephone|Telecom|Residence|InstitutionName|DepartmentName|StationName|"
    r"Organization|Comments|History|Alerts|Allergies|Occupation|Religious|BranchOfService|Rank)"
)
MIN_TOKEN = 3
MIN_NAME_PART = 2
MIN_PHRASE = 6
MIN_COMPACT_ID = 5  # IDs found inside separated runs ("QX-778-1234") from this length
_TRANSLIT = str.maketrans({"Ä": "AE", "Ö": "OE", "Ü": "UE", "ß": "SS", "ẞ": "SS", "Æ": "AE", "Ø": "OE", "Œ": "OE"})
_LATIN_END = 0x024F


def is_latin(word: str) -> bool:
    return all(ord(c) <= _LATIN_END or unicodedata.category(c)[0] != "L" for c in word)


def _strip_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@lru_cache(maxsize=65536)
def fold(word: str) -> tuple[str, ...]:
    """The comparable forms of a word: upper case, diacritics folded, ü as UE and as U.

    ``fold("Wüst") == ("WUEST", "WUST")``; ``fold("Wuest") == ("WUEST",)``: a word matches an
    identifying token when any of its forms is among the tokens' forms.
    """
    upper = word.upper()
    if upper.isascii():
        return (upper,)
    translit = _strip_marks(upper.translate(_TRANSLIT)).upper()
    plain = _strip_marks(upper).upper()
    return (translit,) if translit == plain else (translit, plain)


def token_forms(word: str) -> set[str]:
    """Forms stored for an identifying word: ``fold`` plus AE/OE/UE read as umlauts (Wuest → WUST)."""
    forms = set(fold(word))
    for f in list(forms):
        if any(x in f for x in ("AE", "OE", "UE")) and f.isalpha():
            forms.add(f.replace("AE", "A").replace("OE", "O").replace("UE", "U"))
    return forms


def name_parts(value: str) -> list[str]:
    """Words of a person name: family, given and middle names of every component group
    (alphabetic, ideographic, phonetic); prefixes and suffixes (Dr., Jr.) are not identifying."""
    words = []
    for group in value.split("="):
        for component in group.split("^")[:3]:
            words += WORD.findall(component)
    return words


@lru_cache(maxsize=4096)
def _name_tokens(value: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """(folded tokens, non-Latin parts, any non-ASCII) of a person name; names repeat per series."""
    found = IdentifyingValues()
    parts = [w for w in name_parts(value) if len(w) >= MIN_NAME_PART or not is_latin(w)]
    for word in parts:
        found._word(word)
    # Written together: every ordered pair and the whole name ("DoeJane", "JaneDoe").
    if 1 < len(parts) <= 6:
        for a in parts:
            for b in parts:
                if a is not b:
                    found._word(a + b)
        found._word("".join(parts))
    return frozenset(found.tokens), frozenset(found.scripts), found.non_ascii


@dataclass
class IdentifyingValues:
    tokens: set[str] = field(default_factory=set)  # folded words: name parts, IDs
    dates: set[str] = field(default_factory=set)  # YYYYMMDD
    uids: set[str] = field(default_factory=set)
    phrases: set[str] = field(default_factory=set)  # upper-case free text
    ids: set[str] = field(default_factory=set)  # IDs as letters and digits only (upper)
    scripts: set[str] = field(default_factory=set)  # non-Latin name parts (found as substrings)
    non_ascii: bool = False  # some identifying word was written with non-ASCII letters

    @property
    def ascii_only(self) -> bool:
        """True when every word and phrase is plain ASCII (one decoding of the bytes suffices)."""
        return (not self.non_ascii and all(t.isascii() for t in self.tokens)
                and all(p.isascii() for p in self.phrases))

    def _word(self, word: str) -> None:
        if not word.isascii():
            self.non_ascii = True
        if is_latin(word):
            self.tokens |= token_forms(word)
        else:
            self.scripts.add(word)
            self.tokens.add(word.upper())

    def add_name(self, value: str) -> None:
        tokens, scripts, non_ascii = _name_tokens(value)
        self.tokens |= tokens
        if scripts:
            self.scripts |= scripts
        self.non_ascii |= non_ascii

    def add_id(self, value: str) -> None:
        value = value.strip()
        if " " not in value and len(value) >= MIN_TOKEN and not (value.isdigit() and len(value) < 4):
            self.tokens.add(value.upper())
        for word in WORD.findall(value):
            if len(word) >= 4 or (len(word) >= MIN_TOKEN and not word.isdigit()):
                self.tokens.add(word.upper())
        compact = "".join(WORD.findall(value)).upper()
        if len(compact) >= MIN_COMPACT_ID and compact.isascii():
            self.ids.add(compact)
            self.tokens.add(compact)

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
        self.ids |= other.ids
        self.scripts |= other.scripts
        self.non_ascii |= other.non_ascii

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


# -- dates written as text ------------------------------------------------------------------------

_MONTHS = {
    "JAN": 1, "JANUARY": 1, "JANUAR": 1, "JANV": 1, "FEB": 2, "FEBRUARY": 2, "FEBRUAR": 2, "FEV": 2,
    "MAR": 3, "MARCH": 3, "MAERZ": 3, "MARZ": 3, "MRZ": 3, "APR": 4, "APRIL": 4, "MAY": 5, "MAI": 5,
    "JUN": 6, "JUNE": 6, "JUNI": 6, "JUL": 7, "JULY": 7, "JULI": 7, "AUG": 8, "AUGUST": 8,
    "SEP": 9, "SEPT": 9, "SEPTEMBER": 9, "OCT": 10, "OCTOBER": 10, "OKT": 10, "OKTOBER": 10,
    "NOV": 11, "NOVEMBER": 11, "DEC": 12, "DECEMBER": 12, "DEZ": 12, "DEZEMBER": 12,
}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_SEP = r"[ \t.,/\-]*"
_ORD = r"(?:ST|ND|RD|TH)?\.?"
DATE_PATTERNS = (
    # 01 Jan 1801, 1-January-1801, 1. Januar 1801
    re.compile(rf"(?<![0-9])(\d{{1,2}}){_ORD}{_SEP}{_MONTH}{_SEP}(\d{{4}})(?![0-9])", re.I),
    # Jan 1, 1801 / January 01 1801
    re.compile(rf"(?<![A-Z]){_MONTH}{_SEP}(\d{{1,2}}){_ORD}{_SEP}(\d{{4}})(?![0-9])", re.I),
    # 1801-01-01, 1801.1.1, 1801/01/01
    re.compile(r"(?<![0-9])(\d{4})[-./ ](\d{1,2})[-./ ](\d{1,2})(?![0-9])"),
    # 01.01.1801, 01/01/1801, 1-1-1801 (day-month and month-day both tried)
    re.compile(r"(?<![0-9])(\d{1,2})[-./ ](\d{1,2})[-./ ](\d{4}|\d{2})(?![0-9])"),
)


def _ymd(y: int, m: int, d: int) -> str | None:
    if 1 <= m <= 12 and 1 <= d <= 31:
        return f"{y:04d}{m:02d}{d:02d}"
    return None


MONTH_WORDS = _MONTH_WORDS = frozenset(_MONTHS)
_HAS_NUMERIC_DATE = re.compile(r"\d[-./ ]\d")


def dates_in(text: str, words: set[str] | None = None) -> set[str]:
    """Every YYYYMMDD a text may mean (textual and numeric forms; day/month order both ways).

    ``words``: the upper-case words of ``text`` when the caller has them (skips the textual
    patterns when no month name is among them: the scan runs this on every header).
    """
    found: set[str] = set()
    if words is None or words & _MONTH_WORDS:
        for m in DATE_PATTERNS[0].finditer(text):
            found.add(_ymd(int(m.group(3)), _MONTHS[m.group(2).upper()], int(m.group(1))) or "")
        for m in DATE_PATTERNS[1].finditer(text):
            found.add(_ymd(int(m.group(3)), _MONTHS[m.group(1).upper()], int(m.group(2))) or "")
    if not _HAS_NUMERIC_DATE.search(text):
        found.discard("")
        return found
    for m in DATE_PATTERNS[2].finditer(text):
        found.add(_ymd(int(m.group(1)), int(m.group(2)), int(m.group(3))) or "")
    for m in DATE_PATTERNS[3].finditer(text):
        a, b, y = int(m.group(1)), int(m.group(2)), m.group(3)
        years = [int(y)] if len(y) == 4 else [1900 + int(y), 2000 + int(y)]
        for year in years:
            found.add(_ymd(year, b, a) or "")
            found.add(_ymd(year, a, b) or "")
    found.discard("")
    return found


def remove_dates(text: str) -> str:
    """``text`` with every date-like run (any of ``DATE_PATTERNS``) replaced by a space."""
    for pattern in DATE_PATTERNS:
        text = pattern.sub(" ", text)
    return text
