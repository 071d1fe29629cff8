"""De-identification (DICOM PS3.15 Basic Profile and options) with keyed, persistent pseudonyms.

Public API (pure Python, no Django):
- ``Options`` / ``DEFAULT_OPTIONS`` — profile options of a project (picklable, JSON-able).
- ``KeyStore`` / ``ProjectKey`` — per-project secret keys, options and reverse maps on disk.
- ``Deidentifier(key, options, subject_ids).deidentify(ds) -> DeidOutcome`` — one dataset.
- ``deidentify_folder(src, dst, key, options, ...) -> JobReport`` — a folder on all cores, with
  leak scan, burned-in quarantine, RT integrity and the per-job record; ``deidentify_paths`` for
  a list of files (staging chosen series); ``write_record`` writes the record as CSV and JSON.
- ``ReverseMap`` / ``reidentify_dataset(ds, reverse_map)`` — authorised re-identification
  (raises ``ReidentificationError`` when nothing maps); ``reidentify_files(files, dst, rmap)``
  handles every file on its own.
"""


from dicomflow.core._lazy import lazy_exports

# Exports load lazily (PEP 562): importing one light submodule (e.g. options) must not pull in
# pydicom and the engine, which would slow every command's start-up.
_EXPORTS = {
    "DEFAULT_OPTIONS": "options",
    "DeidOutcome": "engine",
    "Deidentifier": "engine",
    "Finding": "leak",
    "JobReport": "job",
    "KeyStore": "keys",
    "Options": "options",
    "ProjectKey": "keys",
    "ReverseMap": "reidentify",
    "deidentify_file": "job",
    "deidentify_folder": "job",
    "deidentify_paths": "job",
    "references_of": "rtcheck",
    "reidentify_dataset": "reidentify",
    "resolve_references": "rtcheck",
    "scan_dataset": "leak",
    "scan_file_bytes": "leak",
    "write_record": "job",
    "scan_sources": "job",
    "reidentify_files": "reidentify",
    "ReidentificationError": "reidentify",
    "IdentityError": "engine",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_OPTIONS",
    "DeidOutcome",
    "Deidentifier",
    "Finding",
    "JobReport",
    "KeyStore",
    "Options",
    "ProjectKey",
    "ReverseMap",
    "deidentify_file",
    "deidentify_folder",
    "deidentify_paths",
    "references_of",
    "reidentify_dataset",
    "resolve_references",
    "scan_dataset",
    "scan_file_bytes",
    "write_record",
    "scan_sources",
    "reidentify_files",
    "ReidentificationError",
    "IdentityError",
]
