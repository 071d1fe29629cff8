"""Clean Descriptors: keep clinically meaningful words, drop what identifies.

RT needs structure names ("Lung_L", "PTV_60", "Body") after de-identification, so descriptors are
cleaned, not blanked. The cleaner is token based: a word is dropped when any of its folded forms
(case, diacritics, transliteration: ``values.fold``) equals an identifying word collected from the
same object (name parts of any length, names written together, IDs), when it looks like a date (numeric
or textual: "01 Jan 1801"), a long number (5+ digits, typical of IDs) or a UID; a run such as
"QX-778-1234" is dropped when, without its separators, it contains an ID; non-Latin name parts are
removed wherever they occur (scripts without spaces between words). Separators are kept so "Lung_L"
stays.

With a vocabulary (``free_text: "allowlist"``) only known words survive: every word not in the
vocabulary (TG-263 structure names, ROI types, anatomical and technical terms, see
``vocabulary.txt``) is dropped, so a staff name that appears nowhere else in the object is gone too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from dicomflow.core.deid.values import WORD, fold, remove_dates

_SPLIT = re.compile(r"([\W_]+)")
_COLLAPSE = re.compile(r"([\W_])[\W_]+")
_UID_TEXT = re.compile(r"(?<![0-9])\d+(\.\d+){3,}(?![0-9])")
_LONG_NUMBER = re.compile(r"\d{5,}")
_RUN = re.compile(r"[^\W_]+(?:[-./:_ ][^\W_]+)+")
_NUMBER = re.compile(r"\d{1,4}")


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Known words of RT labels and descriptors (folded, upper case), shipped with the package."""
    text = resources.files(__package__).joinpath("vocabulary.txt").read_text("utf-8")
    words: set[str] = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for word in WORD.findall(line):
            words.update(fold(word))
    return frozenset(words)


class DescriptorCleaner:
    """Clean free text against the identifying words of one object."""

    def __init__(self, identifying_tokens: set[str], ids: set[str] | None = None,
                 scripts: set[str] | None = None, allowlist: bool = False):
        self.tokens = {t.upper() for t in identifying_tokens}
        self.ids = {i for i in (ids or ()) if i}
        self.scripts = sorted((s for s in (scripts or ()) if s), key=len, reverse=True)
        self.vocabulary = vocabulary() if allowlist else None

    def _bad(self, word: str) -> bool:
        if self.vocabulary is not None:
            if _NUMBER.fullmatch(word):
                return False
            return not any(f in self.vocabulary for f in fold(word))
        if any(f in self.tokens for f in fold(word)):
            return True
        return bool(_LONG_NUMBER.search(word))

    def _drop_runs(self, text: str) -> str:
        """Drop the pieces of separated runs ("QX-778-1234") that spell an ID without separators."""
        if not self.ids:
            return text

        def check(m: re.Match) -> str:
            run = m.group(0)
            pieces = list(WORD.finditer(run))
            drop: set[int] = set()
            for i in range(len(pieces)):
                compact = ""
                for j in range(i, len(pieces)):
                    compact += pieces[j].group(0).upper()
                    if any(x in compact for x in self.ids):
                        start = i  # shrink from the left: "ID HXQ-KZ7-0098" drops the ID only
                        while start < j and any(
                            x in "".join(p.group(0) for p in pieces[start + 1 : j + 1]).upper() for x in self.ids
                        ):
                            start += 1
                        if j > start:  # a single word is the word test's job
                            drop.update(range(start, j + 1))
                        break
            if not drop:
                return run
            out, last = [], 0
            for k, piece in enumerate(pieces):
                if k in drop:
                    out.append(run[last:piece.start()])
                    last = piece.end()
            out.append(run[last:])
            return "".join(out)

        return _RUN.sub(check, text)

    def clean(self, text: str) -> str:
        for script in self.scripts:
            text = text.replace(script, " ")
        text = _UID_TEXT.sub(" ", text)
        text = remove_dates(text)
        text = self._drop_runs(text)
        parts = _SPLIT.split(text)
        kept: list[str] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:  # a word
                kept.append(part if part and not self._bad(part) else "")
            else:
                kept.append(part)
        out = "".join(kept)
        # Collapse separators left behind by dropped words and trim them at both ends.
        out = _COLLAPSE.sub(r"\1", out)
        return out.strip(" _-.,;:/\\^()[]")

