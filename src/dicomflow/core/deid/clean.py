"""Clean Descriptors: keep clinically meaningful words, drop what identifies.

RT needs structure names ("Lung_L", "PTV_60", "Body") after de-identification, so descriptors are
cleaned, not blanked. The cleaner is conservative and token based: a word is dropped when it equals
an identifying word collected from the same object (name parts, IDs), looks like a date, a time
stamp, a long number (5+ digits, typical of IDs) or a UID. Separators are kept so "Lung_L" stays.
Weak spot (documented): a name that appears nowhere in the object's own attributes cannot be
recognised in free text.
"""

from __future__ import annotations

import re

_SPLIT = re.compile(r"([^0-9A-Za-z\u00C0-\u024F]+)")
_DATE_TEXT = re.compile(
    r"\b(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})\b"
)
_UID_TEXT = re.compile(r"\b\d+(\.\d+){3,}\b")
_LONG_NUMBER = re.compile(r"\d{5,}")


class DescriptorCleaner:
    """Clean free text against the identifying words of one object."""

    def __init__(self, identifying_tokens: set[str]):
        self.tokens = {t.upper() for t in identifying_tokens}

    def _bad(self, word: str) -> bool:
        upper = word.upper()
        if upper in self.tokens:
            return True
        return bool(_LONG_NUMBER.search(word))

    def clean(self, text: str) -> str:
        text = _UID_TEXT.sub(" ", text)
        text = _DATE_TEXT.sub(" ", text)
        parts = _SPLIT.split(text)
        kept: list[str] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:  # a word
                if part and not self._bad(part):
                    kept.append(part)
                else:
                    kept.append("")
            else:
                kept.append(part)
        out = "".join(kept)
        # Collapse separators left behind by dropped words and trim them at both ends.
        out = re.sub(r"([^0-9A-Za-z\u00C0-\u024F])[^0-9A-Za-z\u00C0-\u024F]+", r"\1", out)
        return out.strip(" _-.,;:/\\^()[]")
