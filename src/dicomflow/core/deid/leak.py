"""Leak scan: search every element of an output object, then its raw bytes, for identifying values.

A finding withholds its file (quarantined by the job; the command still fails). Findings name the
tag path, keyword and the class of value (name/id, date, uid, text) — never the value. The job scans the bytes it wrote before Pixel Data (file meta and
every element, private and binary included: ``scan_bytes``) and walks the elements
(``scan_dataset``) only to say where a hit is. Pixel Data copied byte for byte from the source is
not re-scanned; when pydicom wrote the whole file, the written file is read back instead
(``scan_file_bytes``, values >= 5 characters: shorter ones would match random pixel bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicomflow.core.deid.engine import _is_deferred, _vr_of, tag_text
from dicomflow.core.deid.values import MONTH_WORDS, WORD, IdentifyingValues, dates_in, fold

_WORD = WORD
_ASCII_WORD = re.compile(r"[0-9A-Za-z]+")
_HAS_ASCII_LETTER = re.compile(r"[A-Z]")
_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") | frozenset(range(0x80, 0xF5))


def _utf8_words(data: bytes) -> set[bytes]:
    """Runs of ASCII letters and UTF-8 multi-byte characters around each multi-byte character."""
    found: set[bytes] = set()
    end = -1
    for m in _MULTIBYTE.finditer(data):
        if m.start() < end:
            continue
        start, end = m.start(), m.end()
        while start > 0 and data[start - 1] in _WORD_BYTES:
            start -= 1
        while end < len(data) and data[end] in _WORD_BYTES:
            end += 1
        found.add(data[start:end])
    return found
_RUN_DATE = re.compile(r"(\d{1,4})[-./](\d{1,2})[-./](\d{1,4})")


def _scan_dates(runs: set[str], text: str, words: set[str]) -> set[str]:
    """Dates in serialised text: numeric runs ("1801-01-01", "01.01.1801") parsed directly;
    the textual patterns ("01 Jan 1801") only run when a month name is among the words."""
    found: set[str] = set()
    for run in runs:
        if 6 <= len(run) <= 10 and not run.isdigit():
            m = _RUN_DATE.fullmatch(run)
            if m:
                found |= dates_in(run)
    if words & MONTH_WORDS:
        found |= dates_in(text)
    return found


_NUMERIC = re.compile(r"[0-9][0-9./-]*")
_RUN = re.compile(r"[0-9A-Za-z]+(?:[-./_: ][0-9A-Za-z]+)+")
RAW_MIN = 5
BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
# Two-letter words that are VR codes: every explicit VR header contains them as words.
VR_CODES = frozenset(
    "AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


@dataclass(frozen=True)
class Finding:
    tag: str  # tag path: "(0008,1115)[0].(0020,000E)"
    keyword: str
    kind: str

    def describe(self) -> str:
        return f"identifying {self.kind} found in {self.tag} {self.keyword}".rstrip()


def _text_kinds(text: str, values: IdentifyingValues, serialised: bool = False) -> list[str]:
    """Kinds found in ``text``, which may be serialised bytes read as text.

    Words are compared in their folded forms (case, diacritics, transliteration). In serialised
    data a value can touch a neighbouring byte that reads as a letter or digit (the low byte of
    the next tag's group, e.g. 0x32 '2' for group 0032): words and UID runs are also tried without
    one character at either end (words of 6+ characters only, to stay specific); two-letter VR
    codes are not names there.
    """
    kinds = []
    upper = text.upper()
    words = set(_ASCII_WORD.findall(upper))
    if not text.isascii() and (values.non_ascii or not serialised):
        # Words with diacritics ("MÜLLER"): folded. In serialised bytes only when the identity
        # itself has such letters (binary read as Latin-1 is full of them); UTF-8 text is read
        # by ``scan_bytes`` separately.
        for word in _WORD.findall(upper):
            if not word.isascii() and _HAS_ASCII_LETTER.search(word):
                words.update(fold(word))
    trimmed = {w[:-1] for w in words if len(w) >= 6} | {w[1:] for w in words if len(w) >= 6}
    hits = (words | trimmed) & values.tokens
    if serialised:
        hits -= VR_CODES
    found_name = bool(hits)
    if not found_name and values.scripts and not text.isascii():
        found_name = any(s.upper() in upper for s in values.scripts)
    if not found_name and values.ids and any(i[:3] in upper and i[-3:] in upper for i in values.ids):
        for run in _RUN.findall(upper):
            compact = re.sub(r"[^0-9A-Z]", "", run)
            if any(i in compact for i in values.ids):
                found_name = True
                break
    if found_name:
        kinds.append("name/id")
    if values.dates or values.uids:
        # One pass for everything numeric: runs of digits with . - / inside.
        runs = {r.rstrip(".-/") for r in _NUMERIC.findall(text)}
        if values.dates:
            # DA is 8 digits, DT up to 14 before its fraction; longer runs are UID components.
            digits = {w[:8] for w in words if 8 <= len(w) <= 14 and w.isdigit()}
            if (digits & values.dates) or (_scan_dates(runs, text, words) & values.dates):
                kinds.append("date")
        if values.uids:
            uidish = {r for r in runs if "." in r}
            uidish |= {r[1:] for r in uidish} | {r[:-1] for r in uidish} | {r[1:-1] for r in uidish}
            if uidish & values.uids:
                kinds.append("uid")
    if any(p in upper for p in values.phrases):
        kinds.append("text")
    return kinds


def scan_dataset(ds: Dataset, values: IdentifyingValues) -> list[Finding]:
    """Every element at any depth, file meta included; findings name the tag path."""
    findings: list[Finding] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _scan(meta, values, findings, "")
    _scan(ds, values, findings, "")
    return findings


def _scan(ds: Dataset, values: IdentifyingValues, findings: list[Finding], prefix: str) -> None:
    for tag in list(ds.keys()):
        if tag in BULK_TAGS:
            continue  # pixel bytes: the raw pass covers them
        raw = ds.get_item(tag, keep_deferred=True)
        if _is_deferred(raw):
            continue
        path = prefix + tag_text(tag)
        if isinstance(raw, RawDataElement) and _vr_of(tag, raw) != "SQ":
            value = raw.value  # bytes as read: no conversion needed to search them
            keyword = keyword_for_tag(tag) or ""
        else:
            elem = ds[tag]
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or []):
                    _scan(item, values, findings, f"{path}[{i}].")
                continue
            value, keyword = elem.value, elem.keyword
        if value is None:
            continue
        if isinstance(value, bytes):
            text = value.decode("utf-8") if _utf8(value) else value.decode("latin-1")
        elif isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        for kind in _text_kinds(text, values):
            findings.append(Finding(path, keyword, kind))


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def scan_bytes(data: bytes, values: IdentifyingValues) -> list[str]:
    """Kinds of identifying values found in serialised bytes (read as UTF-8 and as Latin-1)."""
    kinds = _text_kinds(data.decode("latin-1"), values, serialised=True)
    if not data.isascii():
        # Text written as UTF-8 ("Müller", "山田"): only its words with multi-byte characters and
        # its non-ASCII phrases can differ from the Latin-1 reading.
        if "name/id" not in kinds:
            words = set()
            for raw in _utf8_words(data):
                try:
                    words.update(fold(raw.decode("utf-8").upper()))
                except UnicodeDecodeError:
                    continue
            if words & values.tokens:
                kinds.append("name/id")
            elif values.scripts:
                text = data.decode("utf-8", "replace").upper()
                if any(x.upper() in text for x in values.scripts):
                    kinds.append("name/id")
        phrases = [p for p in values.phrases if not p.isascii()]
        if "text" not in kinds and phrases:
            text = data.decode("utf-8", "replace").upper()
            if any(p in text for p in phrases):
                kinds.append("text")
    return kinds


def raw_needles(values: IdentifyingValues) -> list[tuple[bytes, str]]:
    needles = [(u.encode("ascii", "ignore"), "uid") for u in values.uids if len(u) >= RAW_MIN]
    needles += [(d.encode("ascii"), "date") for d in values.dates]
    needles += [(t.encode("utf-8"), "name/id") for t in values.tokens if len(t) >= RAW_MIN]
    needles += [(p.encode("utf-8"), "text") for p in values.phrases]
    return needles


def scan_file_bytes(path: Path, values: IdentifyingValues, stop: int | None = None) -> list[Finding]:
    """Final pass over the raw bytes of a written file (case-insensitive for text).

    ``stop``: scan only the first ``stop`` bytes — the job passes the offset of a Pixel Data
    value it copied byte for byte from the source (never changed, so not re-scanned).
    """
    needles = raw_needles(values)
    if not needles:
        return []
    with open(path, "rb") as fh:
        data = fh.read(-1 if stop is None else stop).upper()
    return [Finding("file", "raw bytes", kind) for needle, kind in needles if needle and needle in data]
