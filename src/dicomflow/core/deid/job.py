"""Folder jobs: de-identify every file of a folder on all cores, release only clean output.

Per file (in a worker process): read the header with large values deferred (Pixel Data is never
decoded nor held by the engine), de-identify, write ``<newStudy>/<newSeries>/<newSOP>.dcm`` into a
staging folder inside DST (untouched elements are copied as read, ``fastwrite``; the pixel bytes go
straight from the source file with ``sendfile``), then leak-scan the bytes written. The job then checks RT references over the whole output and moves
the staged files into DST only when the leak scan found nothing: any finding releases nothing.
Released files are on disk when the job returns (one ``syncfs`` at the end; while the workers
write, ``BackgroundFlush`` keeps that last sync short).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import struct
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite

from dicomflow.core.deid import fastwrite
from dicomflow.core.deid.engine import PIXEL_DATA, Deidentifier, _is_deferred
from dicomflow.core.deid.keys import ProjectKey
from dicomflow.core.deid.leak import Finding, scan_bytes, scan_dataset, scan_file_bytes
from dicomflow.core.deid.options import Options
from dicomflow.core.deid.reidentify import ReverseMap
from dicomflow.core.deid.rtcheck import references_of, resolve_references
from dicomflow.core.store import syncfs
from dicomflow.core.writeback import BackgroundFlush
from dicomflow.errors import DicomflowError

DEFER_SIZE = 16 * 1024  # values above this stay on disk until written
STAGE_PREFIX = ".dicomflow-partial-"
RECORD_FIELDS = ("tag", "keyword", "action", "option")


@dataclass
class FileResult:
    source: str
    status: str  # ok | failed | quarantined
    reason: str = ""
    output: str = ""
    uid_map: dict[str, str] = field(default_factory=dict)
    patient: dict | None = None
    study: dict | None = None
    record: list[tuple[str, str, str, str]] = field(default_factory=list)
    references: dict | None = None
    findings: list[dict] = field(default_factory=list)


@dataclass
class JobReport:
    files_in: int = 0
    files_out: int = 0
    failed: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    record: list[dict] = field(default_factory=list)
    reverse_map: ReverseMap = field(default_factory=ReverseMap)
    rt: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.findings

    def contract(self) -> dict:
        """The document of ``dicomflow deid --json`` (ARCHITECTURE.md)."""
        return {
            "files_in": self.files_in,
            "files_out": self.files_out,
            "failed": self.failed,
            "quarantined": self.quarantined,
            "leak_scan": {"findings": len(self.findings)},
        }


def _write(ds, source, target: Path) -> bytes | None:
    """Write ``ds``; a deferred, trailing, defined-length Pixel Data is copied byte for byte.

    Returns the bytes written before that copied value (file header and data set) for the leak
    scan; None when pydicom wrote the whole file (then the scan reads the file back).
    """
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    fast = raw is None or (_is_deferred(raw) and max(ds.keys()) == PIXEL_DATA and raw.value_tell is not None)
    header = None
    if fast:
        if raw is not None:
            del ds[PIXEL_DATA]
        try:
            header = fastwrite.encode(ds)
        except fastwrite.Unsupported:
            header = None
        if header is None and raw is not None:
            ds[PIXEL_DATA] = raw  # back for pydicom's writer (it reads the deferred value)
    if header is None:
        dcmwrite(target, ds, enforce_file_format=True)
        return None
    with open(target, "wb") as out:
        out.write(header)
        if raw is None:
            return header
        if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2":  # implicit VR
            out.write(struct.pack("<HHI", 0x7FE0, 0x0010, raw.length))
        else:
            vr = (raw.VR or "OW").encode("ascii")
            out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, raw.length))
        out.flush()
        offset, left = raw.value_tell, raw.length
        while left > 0:
            sent = os.sendfile(out.fileno(), source.fileno(), offset, left)
            if sent <= 0:
                raise DicomflowError("Pixel Data ends before its declared length")
            offset += sent
            left -= sent
    return header


def deidentify_file(source: Path, stage: Path, deid: Deidentifier) -> FileResult:
    """De-identify one file into ``stage``; every error becomes a reason without values."""
    result = FileResult(source=str(source), status="failed")
    try:
        fh = open(source, "rb")  # opened once: header read, deferred values and pixel copy
    except OSError:
        result.reason = "not a readable file"
        return result
    with fh:
        return _deidentify_open(fh, source, stage, deid, result)


_MADE_DIRS: set[Path] = set()


def _deidentify_open(fh, source: Path, stage: Path, deid: Deidentifier, result: FileResult) -> FileResult:
    try:
        ds = dcmread(fh, defer_size=DEFER_SIZE)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError):
        result.reason = "not a readable DICOM file"
        return result
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        result.reason = "SOP Class UID or SOP Instance UID missing: not a DICOM instance"
        return result
    if str(ds.SOPClassUID) == "1.2.840.10008.1.3.10":
        result.status, result.reason = "quarantined", "media directory (DICOMDIR): re-create it after de-identification"
        return result
    try:
        outcome = deid.deidentify(ds)
    except DicomflowError as exc:
        result.reason = str(exc)
        return result
    except Exception as exc:  # malformed values: report the class, never the value
        result.reason = f"de-identification failed ({type(exc).__name__})"
        return result
    result.record = sorted(outcome.record)
    if outcome.quarantine_reason:
        result.status, result.reason = "quarantined", outcome.quarantine_reason
        return result
    parts = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(parts):
        result.reason = "Study, Series or SOP Instance UID missing"
        return result
    rel = f"{parts[0]}/{parts[1]}/{parts[2]}.dcm"
    target = stage / rel
    if target.parent not in _MADE_DIRS:
        target.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(target.parent)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        header = _write(ds, fh, tmp)
        os.replace(tmp, target)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        result.reason = f"could not write the de-identified file ({type(exc).__name__})"
        return result
    if header is not None:
        # One pass over the bytes written (every element, private and binary included); the
        # element walk runs only to say where a hit is.
        kinds = scan_bytes(header, outcome.values)
        findings = (scan_dataset(ds, outcome.values) or [Finding("file", "raw bytes", k) for k in kinds]) if kinds else []
    else:
        findings = scan_dataset(ds, outcome.values) + scan_file_bytes(target, outcome.values)
    result.status = "ok"
    result.output = rel
    result.uid_map = outcome.uid_map
    result.patient = outcome.patient
    result.study = outcome.study
    result.references = references_of(ds)
    result.findings = [{"path": rel, "tag": f.tag, "keyword": f.keyword, "kind": f.kind} for f in findings]
    return result


# -- worker processes -------------------------------------------------------------------------

_WORKER: Deidentifier | None = None


def _init_worker(key: ProjectKey, options: Options, subject_ids: dict | None) -> None:
    global _WORKER
    from pydicom import config

    # Our own worker processes: skip pydicom's per-value validation (the engine writes values
    # it built itself; the input was valid enough to be read). Not changed in callers' processes.
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    _WORKER = Deidentifier(key, options, subject_ids)


_SENT_ROWS: set = set()


def _run_chunk(args: tuple[list[str], str]) -> list[FileResult]:
    paths, stage = args
    assert _WORKER is not None
    results = [deidentify_file(Path(p), Path(stage), _WORKER) for p in paths]
    for r in results:  # the job keeps the union of record rows: send each row once per worker
        new = [row for row in r.record if row not in _SENT_ROWS]
        _SENT_ROWS.update(new)
        r.record = new
    return results


def iter_files(src: Path) -> list[Path]:
    """Every regular file below ``src`` (or ``src`` itself), sorted, staging folders skipped."""
    src = Path(src)
    if src.is_file():
        return [src]
    files = []
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith(STAGE_PREFIX))
        files += [Path(root) / n for n in sorted(names)]
    return files


def deidentify_folder(
    src: Path | str,
    dst: Path | str,
    key: ProjectKey,
    options: Options,
    subject_ids: dict[str, str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JobReport:
    """De-identify every file below ``src`` into ``dst``; see the module docstring."""
    return deidentify_paths(iter_files(Path(src)), dst, key, options, subject_ids, workers, progress)


def deidentify_paths(
    files: list[Path],
    dst: Path | str,
    key: ProjectKey,
    options: Options,
    subject_ids: dict[str, str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JobReport:
    """De-identify the given files (e.g. the series chosen for staging) into ``dst``."""
    files = [Path(f) for f in files]
    _MADE_DIRS.clear()
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    stage = dst / f"{STAGE_PREFIX}{secrets.token_hex(6)}"
    stage.mkdir()
    report = JobReport(files_in=len(files))
    workers = workers or os.cpu_count() or 1
    results: list[FileResult] = []
    try:
        if workers == 1 or len(files) < 32:
            deid = Deidentifier(key, options, subject_ids)
            for i, path in enumerate(files, 1):
                results.append(deidentify_file(path, stage, deid))
                if progress:
                    progress(i, len(files))
        else:
            size = max(4, min(16, len(files) // (workers * 8) or 1))  # small chunks: even tail
            chunks = [([str(p) for p in files[i : i + size]], str(stage)) for i in range(0, len(files), size)]
            with BackgroundFlush(dst), ProcessPoolExecutor(
                workers, initializer=_init_worker, initargs=(key, options, subject_ids)
            ) as pool:
                for chunk_results in pool.map(_run_chunk, chunks):
                    results += chunk_results
                    if progress:
                        progress(len(results), len(files))
        _collect(results, report)
        if report.findings:
            report.failed += [
                {"path": r.source, "reason": f"leak scan: identifying {f['kind']} in {f['tag']} {f['keyword']}".rstrip()}
                for r in results
                for f in r.findings
            ]
        else:
            _release(stage, dst, report.outputs)
            report.files_out = len(report.outputs)
            if report.files_out:
                syncfs(dst)  # released means on disk
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return report


def _collect(results: list[FileResult], report: JobReport) -> None:
    rows: set[tuple[str, str, str, str]] = set()
    seen: dict[str, str] = {}
    objects: dict[str, dict] = {}
    for r in results:
        rows.update(tuple(x) for x in r.record)
        if r.status == "failed":
            report.failed.append({"path": r.source, "reason": r.reason})
        elif r.status == "quarantined":
            report.quarantined.append({"path": r.source, "reason": r.reason})
        else:
            if r.output in seen:
                report.failed.append({"path": r.source, "reason": f"same SOP Instance UID as {seen[r.output]}"})
                continue
            seen[r.output] = r.source
            report.outputs.append(r.output)
            report.findings += r.findings
            report.reverse_map.uids.update(r.uid_map)
            if r.patient:
                report.reverse_map.patients[r.patient["pseudonym"]] = r.patient
            if r.study:
                report.reverse_map.studies[r.study["uid"]] = r.study
            objects[r.output] = r.references
    report.record = [dict(zip(RECORD_FIELDS, row)) for row in sorted(rows)]
    report.rt = resolve_references(objects)


def _release(stage: Path, dst: Path, outputs: list[str]) -> None:
    """Move the staged files into ``dst``: whole study folders when new, else file by file."""
    studies: dict[str, list[str]] = {}
    for rel in outputs:
        studies.setdefault(rel.split("/", 1)[0], []).append(rel)
    for study, rels in studies.items():
        staged = stage / study
        if not (dst / study).exists() and len(rels) == sum(len(f) for _, _, f in os.walk(staged)):
            os.replace(staged, dst / study)  # one rename for the whole study
            continue
        for rel in rels:
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, target)


def write_record(report: JobReport, directory: Path | str) -> tuple[Path, Path]:
    """The per-job de-identification record (tag, keyword, action, option) as CSV and JSON."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / "deid-record.csv", directory / "deid-record.json"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        writer.writerows(report.record)
    json_path.write_text(json.dumps({"record": report.record, "rt_integrity": report.rt}, indent=1), "utf-8")
    return csv_path, json_path
