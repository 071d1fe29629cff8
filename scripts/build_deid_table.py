#!/usr/bin/env python3
"""Convert DICOM PS3.15 Table E.1-1 (shared standard data) into the engine's compact data file.

Why a script: the table is data, never retyped by hand. Re-run after updating the shared snapshot:

    python scripts/build_deid_table.py [--source ../shared/standard/ps3.15-table-e.1-1.json]

Output (deterministic, sorted): ``src/dicomflow/core/deid/ps315_table_e1_1.json`` with
``{"source", "licence", "attributes": {"ggggeeee": [name, basic, {option: action}]},
"repeating": {"50xxxxxx" | "60xx3000" | ...: [...]}, "private": [...]}`` and the licence file copied
next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/work/shared/standard/ps3.15-table-e.1-1.json")
OUT_DIR = ROOT / "src" / "dicomflow" / "core" / "deid"
OUT_FILE = OUT_DIR / "ps315_table_e1_1.json"
LICENCE = "LICENSE-innolitics-dicom-standard.txt"
OPTION_COLUMNS = (
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)
VALID_ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}


def convert(source: Path) -> dict:
    entries = json.loads(source.read_text(encoding="utf-8"))
    attributes: dict[str, list] = {}
    repeating: dict[str, list] = {}
    private: list | None = None
    for entry in entries:
        basic = entry["basicProfile"].strip()
        if basic not in VALID_ACTIONS:
            raise SystemExit(f"unexpected action {basic!r} for {entry['tag']}")
        options = {c: entry[c].strip() for c in OPTION_COLUMNS if c in entry}
        row = [entry["name"], basic, options]
        key = entry["id"].lower()
        if key.startswith("gggg"):
            private = row
        elif "x" in key:
            repeating[key] = row
        else:
            int(key, 16)  # must be 8 hex digits
            if key in attributes:
                raise SystemExit(f"duplicate entry for {entry['tag']}")
            attributes[key] = row
    if private is None:
        raise SystemExit("the private-attributes row is missing from the table")
    return {
        "source": "DICOM PS3.15 Table E.1-1 via innolitics/dicom-standard (snapshot 2025-01-28)",
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "licence": LICENCE,
        "attributes": dict(sorted(attributes.items())),
        "repeating": dict(sorted(repeating.items())),
        "private": private,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=OUT_FILE)
    args = parser.parse_args()
    data = convert(args.source)
    args.out.write_text(json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")
    shutil.copyfile(args.source.parent / LICENCE, args.out.parent / LICENCE)
    print(f"wrote {args.out} ({len(data['attributes'])} attributes, {len(data['repeating'])} repeating)")


if __name__ == "__main__":
    main()
