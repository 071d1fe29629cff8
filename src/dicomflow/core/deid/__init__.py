"""De-identification (DICOM PS3.15 Basic Profile and options) with keyed, persistent pseudonyms.

Public API (pure Python, no Django):
- ``Options`` / ``DEFAULT_OPTIONS`` — profile options of a project (picklable, JSON-able).
- ``KeyStore`` / ``ProjectKey`` — per-project secret keys, options and reverse maps on disk.
- ``Deidentifier(key, options, subject_ids).deidentify(ds) -> DeidOutcome`` — one dataset.
- ``deidentify_folder(src, dst, key, options, ...) -> JobReport`` — a folder on all cores, with
  leak scan, burned-in quarantine, RT integrity and the per-job record; ``deidentify_paths`` for
  a list of files (staging chosen series); ``write_record`` writes the record as CSV and JSON.
- ``ReverseMap`` / ``reidentify_dataset(ds, reverse_map)`` — authorised re-identification.
"""

from dicomflow.core.deid.engine import DeidOutcome, Deidentifier
from dicomflow.core.deid.job import JobReport, deidentify_file, deidentify_folder, deidentify_paths, write_record
from dicomflow.core.deid.keys import KeyStore, ProjectKey
from dicomflow.core.deid.leak import Finding, scan_dataset, scan_file_bytes
from dicomflow.core.deid.options import DEFAULT_OPTIONS, Options
from dicomflow.core.deid.reidentify import ReverseMap, reidentify_dataset
from dicomflow.core.deid.rtcheck import references_of, resolve_references

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
]
