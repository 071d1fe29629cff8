"""Attribute paths: which element(s) of a header a rule looks at.

Grammar: ``segment ('.' segment)*`` where a segment is a keyword (``Modality``) or a tag
(``(0008,0060)`` or ``00080060``), optionally followed by an item selector ``[n]`` (0-based) or
``[*]`` (every item). Every segment but the last must be a sequence; a sequence segment without a
selector means ``[*]``. Examples::

    Modality
    (0008,0060)
    ReferencedFrameOfReferenceSequence[*].FrameOfReferenceUID
    (300A,00B0)[0].BeamName

A lookup returns every value reached, flattened over items and over multi-valued elements
(``ImageType`` gives ``['ORIGINAL', 'PRIMARY', 'AXIAL']``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from dicomflow.errors import RuleDefinitionError

ALL_ITEMS = "*"
_SEGMENT = re.compile(
    r"^(?:\((?P<g>[0-9A-Fa-f]{4}),(?P<e>[0-9A-Fa-f]{4})\)|(?P<hex>[0-9A-Fa-f]{8})|(?P<kw>[A-Za-z][A-Za-z0-9]*))"
    r"(?:\[(?P<idx>\*|\d+)\])?$"
)


@dataclass(frozen=True)
class Segment:
    tag: BaseTag
    index: int | str | None = None  # None: no selector, int: that item, "*": every item

    @property
    def name(self) -> str:
        return keyword_for_tag(self.tag) or f"({self.tag.group:04X},{self.tag.element:04X})"


@dataclass(frozen=True)
class AttributePath:
    text: str
    segments: tuple[Segment, ...]

    @property
    def tags(self) -> tuple[BaseTag, ...]:
        return tuple(s.tag for s in self.segments)

    @property
    def leaf(self) -> BaseTag:
        return self.segments[-1].tag


@dataclass
class Lookup:
    """What a path reached in one dataset."""

    present: bool = False  # at least one element reached with a non-empty value
    values: list[Any] = field(default_factory=list)  # flattened plain values (str, int, float)
    vrs: set[str] = field(default_factory=set)


def _split(text: str) -> list[str]:
    # Tags contain ',' but never '.', and keywords never contain '.', so a plain split is exact.
    return [part.strip() for part in text.split(".")]


def parse_path(text: str) -> AttributePath:
    """Parse and validate an attribute path; raise RuleDefinitionError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise RuleDefinitionError("a rule needs an 'attribute' (a keyword, a tag like (0008,0060) or a path)")
    parts = _split(text.strip())
    segments: list[Segment] = []
    for position, part in enumerate(parts):
        match = _SEGMENT.match(part)
        if not match:
            raise RuleDefinitionError(
                f"attribute path '{text}': segment '{part}' is not a keyword, a tag like (0008,0060) "
                "or either followed by [n] / [*]"
            )
        if match["kw"]:
            tag_value = tag_for_keyword(match["kw"])
            if tag_value is None:
                raise RuleDefinitionError(f"attribute path '{text}': '{match['kw']}' is not a DICOM keyword")
            tag = Tag(tag_value)
        elif match["hex"]:
            tag = Tag(int(match["hex"], 16))
        else:
            tag = Tag(int(match["g"], 16), int(match["e"], 16))
        idx = match["idx"]
        index: int | str | None = None if idx is None else (ALL_ITEMS if idx == "*" else int(idx))
        last = position == len(parts) - 1
        if not last and not tag.is_private:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None
            if vr is not None and vr != "SQ":
                raise RuleDefinitionError(
                    f"attribute path '{text}': '{part}' is not a sequence, so nothing can follow it"
                )
        if index is not None and last and not tag.is_private:
            try:
                is_seq = dictionary_VR(tag) == "SQ"
            except KeyError:
                is_seq = True
            if not is_seq:
                raise RuleDefinitionError(f"attribute path '{text}': [n] only applies to sequences")
        segments.append(Segment(tag, index))
    return AttributePath(text.strip(), tuple(segments))


def _plain(value: Any) -> Any:
    """A JSON-friendly scalar for one element value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value  # IS/DS subclass int/float: keep them numbers
    if isinstance(value, bytes):
        return None
    return str(value).strip()


def _items(sequence: Any, index: int | str | None) -> list[Dataset]:
    items = list(sequence or [])
    if index is None or index == ALL_ITEMS:
        return items
    return [items[index]] if 0 <= index < len(items) else []


def lookup(dataset: Dataset, path: AttributePath) -> Lookup:
    """Every value ``path`` reaches in ``dataset`` (see the module docstring)."""
    result = Lookup()
    level = [dataset]
    for position, segment in enumerate(path.segments):
        last = position == len(path.segments) - 1
        next_level: list[Dataset] = []
        for ds in level:
            if segment.tag not in ds:
                continue
            element = ds[segment.tag]
            result.vrs.add(str(element.VR))
            if element.VR == "SQ":
                items = _items(element.value, segment.index)
                if last:
                    result.present = result.present or bool(items)
                else:
                    next_level.extend(items)
                continue
            if not last:
                continue
            raw = element.value
            if raw is None or raw == "" or (isinstance(raw, (list, MultiValue)) and len(raw) == 0):
                continue
            values = list(raw) if isinstance(raw, (list, MultiValue)) else [raw]
            plain = [_plain(v) for v in values]
            result.present = True
            result.values.extend(v for v in plain if v is not None and v != "")
        level = next_level
    return result
