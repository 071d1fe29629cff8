"""PS3.15 Table E.1-1 as the engine sees it: loaded once from the generated data file.

The file is produced by ``scripts/build_deid_table.py`` from the shared standard data; never edit
it by hand. ``rule_for(tag)`` answers the row for a public tag, including the repeating groups
(50xx curves, 60xx overlays).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pydicom.datadict import tag_for_keyword

# Attributes that carry free text or identity but are missing from the E.1-1 snapshot (RT and SR
# labels, descriptors and issuer identifiers; issue 13). Same shape as a table row: Basic Profile
# action and the options that change it. The snapshot wins where it lists the attribute.
SUPPLEMENT: dict[str, tuple[str, dict[str, str]]] = {
    "DocumentTitle": ("X/Z", {"cleanDescOpt": "C"}),
    "HL7InstanceIdentifier": ("X/D", {}),
    "ContentLabel": ("D", {"cleanDescOpt": "C"}),
    "ContentDescription": ("X/Z", {"cleanDescOpt": "C"}),
    "ContentCreatorName": ("Z", {}),
    "GraphicLayerDescription": ("X", {"cleanDescOpt": "C", "cleanGraphOpt": "C"}),
    "CompletionFlagDescription": ("X", {"cleanDescOpt": "C", "cleanStructContOpt": "C"}),
    "BeamName": ("X", {"cleanDescOpt": "C"}),
    "PatientSetupLabel": ("X", {"cleanDescOpt": "C"}),
    "ToleranceTableLabel": ("X", {"cleanDescOpt": "C"}),
    "DoseComment": ("X", {"cleanDescOpt": "C"}),
    "FractionGroupDescription": ("X", {"cleanDescOpt": "C"}),
    "ApplicationSetupName": ("X", {"cleanDescOpt": "C"}),
    "PatientBirthDateInAlternativeCalendar": ("X", {}),
    "PatientDeathDateInAlternativeCalendar": ("X", {}),
    "PatientAlternativeCalendar": ("X", {}),
    "UniversalEntityID": ("X/D", {}),
    "LocalNamespaceEntityID": ("X/D", {}),
    "TextValue": ("D", {"cleanStructContOpt": "C", "cleanDescOpt": "C"}),
    "ReferencedFileID": ("X", {}),
    "RetrieveAETitle": ("X", {}),
    "StationAETitle": ("X", {}),
    "SourceApplicationEntityTitle": ("X", {}),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One row: Basic Profile action and the actions of the options that change it."""

    name: str
    basic: str
    options: tuple[tuple[str, str], ...]

    def action(self, active_columns: frozenset[str]) -> tuple[str, str]:
        """(action, deciding option column or "basic") for the active options.

        Where several active options name this attribute, the most retaining wins (K over C),
        as each option is a permission to keep more; the full-dates and modified-dates options
        are mutually exclusive (``Options`` refuses both).
        """
        chosen: tuple[str, str] | None = None
        for column, action in self.options:
            if column in active_columns:
                if action == "K":
                    return "K", column
                if chosen is None:
                    chosen = (action, column)
        return chosen or (self.basic, "basic")


@lru_cache(maxsize=1)
def _load() -> tuple[dict[int, Rule], dict[str, Rule], Rule]:
    raw = json.loads(resources.files(__package__).joinpath("ps315_table_e1_1.json").read_text("utf-8"))

    def rule(row: list) -> Rule:
        name, basic, options = row
        return Rule(name, basic, tuple(sorted(options.items())))

    attributes = {int(key, 16): rule(row) for key, row in raw["attributes"].items()}
    for keyword, (basic, options) in SUPPLEMENT.items():
        tag = tag_for_keyword(keyword)
        if tag is not None and tag not in attributes:
            attributes[tag] = Rule(keyword, basic, tuple(sorted(options.items())))
    repeating = {key: rule(row) for key, row in raw["repeating"].items()}
    return attributes, repeating, rule(raw["private"])


def table() -> dict[int, Rule]:
    """Every public (non-repeating) row keyed by tag as an int."""
    return _load()[0]


def private_rule() -> Rule:
    return _load()[2]


def rule_for(tag: int) -> Rule | None:
    """The row governing a public tag, or None when the table does not list it."""
    attributes, repeating, _ = _load()
    found = attributes.get(tag)
    if found is not None:
        return found
    group = tag >> 16
    if 0x5000 <= group <= 0x501E and not group & 1:
        return repeating.get("50xxxxxx")
    if 0x6000 <= group <= 0x601E and not group & 1:
        # Every overlay attribute goes with its overlay: data and comments are listed, the
        # others (rows, columns, origin...) describe the bitmap and follow Overlay Data.
        elem = tag & 0xFFFF
        return repeating.get("60xx4000") if elem == 0x4000 else repeating.get("60xx3000")
    return None
