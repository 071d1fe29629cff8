"""Leak scan: search every element of an output object, then its raw bytes, for identifying values.

Any finding fails the job. Findings name the tag, keyword and the class of value (name, id, date,
uid, text) — never the value. The job scans the bytes it wrote before Pixel Data (file meta and
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
from dicomflow.core.deid.values import IdentifyingValues

_WORD = re.compile(r"[0-9A-Za-z\u00C0-\u024F]+")
_ASCII_WORD = re.compile(r"[0-9A-Za-z]+")
_NUMERIC = re.compile(r"[0-9][0-9./-]*")
_DATE_FORMS = re.compile(r"(\d{4})[-./](\d{2})[-./](\d{2})|(\d{2})[-./](\d{2})[-./](\d{4})")
RAW_MIN = 5
BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


@dataclass(frozen=True)
class Finding:
    tag: str
    keyword: str
    kind: str

    def describe(self) -> str:
        return f"identifying {self.kind} found in {self.tag} {self.keyword}".rstrip()


def _text_kinds(text: str, values: IdentifyingValues) -> list[str]:
    """Kinds found in ``text``, which may be serialised bytes read as text.

    In serialised data a value can touch a neighbouring byte that reads as a letter or digit (the
    low byte of the next tag's group, e.g. 0x32 '2' for group 0032): words and UID runs are also
    tried without one character at either end (words of 6+ characters only, to stay specific).
    """
    kinds = []
    upper = text.upper()
    words = set(_ASCII_WORD.findall(upper))
    if not values.ascii_only:
        words |= set(_WORD.findall(upper))
    trimmed = {w[:-1] for w in words if len(w) >= 6} | {w[1:] for w in words if len(w) >= 6}
    if (words | trimmed) & values.tokens:
        kinds.append("name/id")
    if values.dates or values.uids:
        # One pass for everything numeric: runs of digits with . - / inside.
        runs = {r.rstrip(".-/") for r in _NUMERIC.findall(text)}
        if values.dates:
            # DA is 8 digits, DT up to 14 before its fraction; longer runs are UID components.
            digits = {w[:8] for w in words if 8 <= len(w) <= 14 and w.isdigit()}
            for run in runs:
                if len(run) == 10 and not run.isdigit():
                    m = _DATE_FORMS.fullmatch(run)
                    if m:
                        digits.add(m.group(1) + m.group(2) + m.group(3) if m.group(1) else m.group(6) + m.group(5) + m.group(4))
            if digits & values.dates:
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
    """Every element at any depth, file meta included."""
    findings: list[Finding] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _scan(meta, values, findings)
    _scan(ds, values, findings)
    return findings


def _scan(ds: Dataset, values: IdentifyingValues, findings: list[Finding]) -> None:
    for tag in list(ds.keys()):
        if tag in BULK_TAGS:
            continue  # pixel bytes: the raw pass covers them
        raw = ds.get_item(tag, keep_deferred=True)
        if _is_deferred(raw):
            continue
        if isinstance(raw, RawDataElement) and _vr_of(tag, raw) != "SQ":
            value = raw.value  # bytes as read: no conversion needed to search them
            keyword = keyword_for_tag(tag) or ""
        else:
            elem = ds[tag]
            if elem.VR == "SQ":
                for item in elem.value or []:
                    _scan(item, values, findings)
                continue
            value, keyword = elem.value, elem.keyword
        if value is None:
            continue
        if isinstance(value, bytes):
            text = value.decode("latin-1")
        elif isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        for kind in _text_kinds(text, values):
            findings.append(Finding(tag_text(tag), keyword, kind))


def scan_bytes(data: bytes, values: IdentifyingValues) -> list[str]:
    """Kinds of identifying values found in serialised bytes (read as UTF-8 and as Latin-1)."""
    kinds: list[str] = []
    texts = [data.decode("latin-1")]
    if not values.ascii_only and not data.isascii():
        texts.append(data.decode("utf-8", "replace"))  # non-ASCII names written as UTF-8
    for text in texts:
        for kind in _text_kinds(text, values):
            if kind not in kinds:
                kinds.append(kind)
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
