"""Folder jobs: de-identify every file of a folder on all cores, release only clean output.

Per file (in a worker process): refuse anything but a regular file (FIFOs, sockets and devices are
never opened for reading, so a job cannot hang on them), read the header with large values
deferred (Pixel Data is never decoded nor held by the engine), refuse a truncated data set,
de-identify, write ``<newStudy>/<newSeries>/<newSOP>.dcm`` into the job folder (untouched elements
are copied as read, ``fastwrite``; the pixel bytes go straight from the source file with
``sendfile``, or masked when bits above Bits Stored carry an overlay), then leak-scan the bytes
written. A file with a finding is withheld (quarantined with the finding's tag path and kind,
never the value); the others are released.

The job folder is a sibling of DST (``.dicomflow-partial-<DST name>``), removed when a job starts
and when it ends: a killed job leaves nothing in DST. Release is one rename when DST is new or
empty, else one rename per study. Released files are on disk when the job returns (one ``syncfs``
at the end; while the workers write, ``BackgroundFlush`` keeps that last sync short).

Two different patients must never share a pseudonym: files whose (Patient ID, Issuer) — or
supplied subject ID — maps to one pseudonym but whose names or birth dates disagree are refused
(all of them), and a file without a Patient ID is refused.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import stat
import struct
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite

from dicomflow.core.deid import fastwrite
from dicomflow.core.deid.engine import PIXEL_DATA, Deidentifier, _is_deferred
from dicomflow.core.deid.overlay import OverlayBits, embedded_overlay, overlay_mask
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
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


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
    shifted_dates: list[str] = field(default_factory=list)


@dataclass
class JobReport:
    files_in: int = 0
    files_out: int = 0
    failed: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # by rule: DICOMDIR, not a regular file
    findings: list[dict] = field(default_factory=list)  # {"path", "tag", "keyword", "kind"}
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
            "leak_scan": {
                "findings": len(self.findings),
                "items": [{k: f[k] for k in ("path", "tag", "keyword", "kind")} for f in self.findings],
            },
            "skipped": self.skipped,
        }


def _write(ds, source, target: Path, pixels: bytes | None = None) -> bytes | None:
    """Write ``ds``; a deferred, trailing, defined-length Pixel Data is copied byte for byte.

    ``pixels``: replacement Pixel Data value (overlay bits masked), written instead of the source's.
    Returns the bytes written before the pixel value (file header and data set) for the leak
    scan; None when pydicom wrote the whole file (then the scan reads the file back).
    """
    ds.preamble = b"\x00" * 128  # never the source's preamble (TIFF headers, names...)
    if pixels is not None:
        vr = ds.get_item(PIXEL_DATA, keep_deferred=True).VR or "OW"
        del ds[PIXEL_DATA]
        ds.add_new(PIXEL_DATA, "OB" if vr == "OB" else "OW", pixels)
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    fast = raw is None or (_is_deferred(raw) and max(map(int, ds._dict)) == PIXEL_DATA and raw.value_tell is not None)
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


def special_file_reason(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is refused (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return f"not a regular file ({name}): refused, only regular files are read"
    return "not a regular file: refused, only regular files are read"


def _open_regular(source: Path):
    """Open a regular file for reading without ever blocking (a FIFO is refused, not waited on).

    Returns (file object, None) or (None, (status, reason)).
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except PermissionError:
        return None, ("failed", "file not readable (permission denied)")
    except OSError as exc:
        if exc.errno == 6:  # ENXIO: a FIFO without a writer, or a socket
            return None, ("skipped", "not a regular file (FIFO or socket): refused, only regular files are read")
        return None, ("failed", f"file not readable ({type(exc).__name__})")
    reason = special_file_reason(os.fstat(fd).st_mode)
    if reason:
        os.close(fd)
        return None, ("skipped", reason)
    os.set_blocking(fd, True)
    fh = open(fd, "rb")
    fh.raw.name = str(source)  # pydicom reads deferred values through the file's name
    return fh, None


def deidentify_file(source: Path, stage: Path, deid: Deidentifier) -> FileResult:
    """De-identify one file into ``stage``; every error becomes a reason without values."""
    result = FileResult(source=str(source), status="failed")
    fh, refusal = _open_regular(Path(source))
    if fh is None:
        result.status, result.reason = refusal
        return result
    with fh:
        return _deidentify_open(fh, source, stage, deid, result)


# The last Type 1 top-level attribute of common objects: a file cut exactly between two elements
# reads as a shorter valid data set, so these must be present.
_IMAGE_CLASSES = frozenset(
    "1.2.840.10008.5.1.4.1.1." + suffix
    for suffix in ("1", "1.1", "1.2", "2", "2.1", "2.2", "4", "4.1", "4.3", "4.4", "6.1", "7", "7.1", "7.2",
                   "7.3", "7.4", "20", "128", "128.1", "130", "481.1")
)
_LAST_REQUIRED = {
    "1.2.840.10008.5.1.4.1.1.481.3": 0x30060080,  # RT Structure Set: RT ROI Observations Sequence
}


def incomplete(ds) -> bool:
    """True when a required last attribute is missing (an image without Pixel Data, an RT
    Structure Set without RT ROI Observations): the file was cut between two elements."""
    sop_class = str(ds.get("SOPClassUID", ""))
    required = _LAST_REQUIRED.get(sop_class)
    if required is None and sop_class in _IMAGE_CLASSES:
        if 0x7FE00008 in ds._dict or 0x7FE00009 in ds._dict:  # float / double float pixel data
            return False
        required = 0x7FE00010
    return required is not None and required not in ds._dict


_SEQ_DELIMITER = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}


def truncated(ds, fh) -> bool:
    """True when the data set ends before its elements do (a file cut short).

    pydicom stops quietly at the end of the file: a value shorter than its length, a deferred
    value reaching past the end, or a last undefined-length element without its delimiter
    all mean the object is incomplete.
    """
    size = os.fstat(fh.fileno()).st_size
    meta = getattr(ds, "file_meta", None)
    deflated = meta is not None and str(meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99"
    # pydicom reads in file order and stops at the end of the file: only the last element read
    # can be short (or, deferred, reach past the end).
    last = next(reversed(ds._dict), None)
    if last is None:
        return False
    raw = ds._dict[last]
    if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
        if raw.value is not None and len(raw.value) < raw.length:
            return True
        if not deflated and raw.value_tell is not None and raw.value_tell + raw.length > size:
            return True
    undefined = getattr(raw, "length", None) == 0xFFFFFFFF or (
        not isinstance(raw, RawDataElement) and raw.VR == "SQ" and getattr(raw, "is_undefined_length", False)
    )
    if undefined and not deflated:
        fh.seek(max(0, size - 8))
        return fh.read(8) != _SEQ_DELIMITER[ds.is_little_endian is not False]
    return False


_MADE_DIRS: set[Path] = set()


def _deidentify_open(fh, source: Path, stage: Path, deid: Deidentifier, result: FileResult) -> FileResult:
    try:
        ds = dcmread(fh, defer_size=DEFER_SIZE)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, struct.error):
        result.reason = "not a readable DICOM file"
        return result
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "") if meta is not None else "")
    if media_class == DICOMDIR_CLASS or str(ds.get("SOPClassUID", "")) == DICOMDIR_CLASS or (
        0x00041220 in ds and "SOPInstanceUID" not in ds
    ):
        result.status, result.reason = "skipped", "media directory (DICOMDIR): skipped, re-create it after de-identification"
        return result
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        result.reason = "SOP Class UID or SOP Instance UID missing: not a DICOM instance"
        return result
    try:
        cut = truncated(ds, fh) or incomplete(ds)
    except Exception:
        cut = True
    if cut:
        result.reason = "truncated data set (the file ends inside an element, or before a required last attribute): refused"
        return result
    overlay = embedded_overlay(ds)
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
    try:
        pixels = overlay_mask(ds, fh, overlay)
    except OverlayBits as exc:
        if deid.options.overlay_bits == "quarantine" or exc.masked is None:
            result.status, result.reason = "quarantined", str(exc)
            return result
        pixels = exc.masked
    except Exception as exc:
        result.reason = f"could not check Pixel Data for overlay bits ({type(exc).__name__})"
        return result
    rel = f"{parts[0]}/{parts[1]}/{parts[2]}.dcm"
    target = stage / rel
    if target.parent not in _MADE_DIRS:
        target.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(target.parent)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        header = _write(ds, fh, tmp, pixels)
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
        findings = scan_dataset(ds, outcome.values) or scan_file_bytes(target, outcome.values)
    result.status = "ok"
    result.output = rel
    result.uid_map = outcome.uid_map
    result.patient = outcome.patient
    result.study = outcome.study
    result.references = references_of(ds)
    result.findings = [{"path": str(source), "output": rel, "tag": f.tag, "keyword": f.keyword, "kind": f.kind}
                       for f in findings]
    result.shifted_dates = sorted(outcome.shifted_dates)
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


def scan_sources(src: Path) -> tuple[list[Path], list[dict], list[dict]]:
    """(regular files, skipped, failed) below ``src`` (or ``src`` itself), sorted.

    Special files (FIFO, socket, device) are skipped with their reason, never opened; folders and
    files that cannot be read are failures with their reason; job folders are ignored.
    """
    src = Path(src)
    files: list[Path] = []
    skipped: list[dict] = []
    failed: list[dict] = []

    def classify(path: Path) -> None:
        try:
            mode = path.stat().st_mode
        except PermissionError:
            failed.append({"path": str(path), "reason": "file not readable (permission denied)"})
            return
        except OSError as exc:
            failed.append({"path": str(path), "reason": f"file not readable ({type(exc).__name__})"})
            return
        reason = special_file_reason(mode)
        if reason is None:
            files.append(path)  # unreadable ones fail when opened, with their reason
        else:
            skipped.append({"path": str(path), "reason": reason})

    if not src.is_dir():
        classify(src)
        return files, skipped, failed

    def onerror(exc: OSError) -> None:
        failed.append({"path": str(getattr(exc, "filename", "") or src),
                       "reason": f"folder not readable ({'permission denied' if isinstance(exc, PermissionError) else type(exc).__name__})"})

    for root, dirs, names in os.walk(src, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if not d.startswith(STAGE_PREFIX))
        for name in sorted(names):
            classify(Path(root) / name)
    return files, skipped, failed


def iter_files(src: Path) -> list[Path]:
    """Every regular file below ``src`` (or ``src`` itself), sorted, job folders skipped."""
    return scan_sources(Path(src))[0]


def deidentify_folder(
    src: Path | str,
    dst: Path | str,
    key: ProjectKey,
    options: Options,
    subject_ids: dict[str, str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    known_patients: dict[str, dict] | None = None,
) -> JobReport:
    """De-identify every file below ``src`` into ``dst``; see the module docstring.

    ``known_patients``: the project's reverse map patients (pseudonym → record); a file whose
    pseudonym is recorded there for another person is refused too.
    """
    files, skipped, failed = scan_sources(Path(src))
    report = deidentify_paths(files, dst, key, options, subject_ids, workers, progress, known_patients)
    report.files_in += len(skipped) + len(failed)
    report.skipped = skipped + report.skipped
    report.failed = failed + report.failed
    return report


def job_folder(dst: Path) -> Path:
    """The job folder of a DST: a sibling (same file system, so release is a rename)."""
    return dst.parent / f"{STAGE_PREFIX}{dst.name}"


def _clean_stale(dst: Path) -> None:
    """Remove job folders of earlier (killed) jobs: the sibling and any old one inside DST."""
    shutil.rmtree(job_folder(dst), ignore_errors=True)
    if dst.is_dir():
        for child in dst.iterdir():
            if child.name.startswith(STAGE_PREFIX):
                shutil.rmtree(child, ignore_errors=True)


def deidentify_paths(
    files: list[Path],
    dst: Path | str,
    key: ProjectKey,
    options: Options,
    subject_ids: dict[str, str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    known_patients: dict[str, dict] | None = None,
) -> JobReport:
    """De-identify the given files (e.g. the series chosen for staging) into ``dst``.

    ``known_patients`` as for ``deidentify_folder``.
    """
    files = [Path(f) for f in files]
    _MADE_DIRS.clear()
    dst = Path(dst).absolute()
    _clean_stale(dst)
    stage = job_folder(dst)
    try:
        stage.mkdir(parents=True)
    except OSError:  # DST's parent not writable: the job folder goes inside DST
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
            with BackgroundFlush(stage), ProcessPoolExecutor(
                workers, initializer=_init_worker, initargs=(key, options, subject_ids)
            ) as pool:
                for chunk_results in pool.map(_run_chunk, chunks):
                    results += chunk_results
                    if progress:
                        progress(len(results), len(files))
        _refuse_conflicts(results, known_patients or {})
        _withhold_findings(results, stage)
        _collect(results, report)
        _release(stage, dst, report.outputs)
        report.files_out = len(report.outputs)
        dst.mkdir(parents=True, exist_ok=True)
        if report.files_out:
            syncfs(dst)  # released means on disk
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return report


def _identity(patient: dict) -> tuple[str, str, str, str]:
    name = " ".join(patient.get("patient_name", "").replace("^", " ").upper().split())
    return patient.get("patient_id", ""), patient.get("issuer", ""), name, patient.get("birth_date", "")


def _agree(a: tuple, b: tuple) -> bool:
    """Same person: same ID and issuer; names and birth dates equal where both are known."""
    return a[:2] == b[:2] and all(x == y or not x or not y for x, y in zip(a[2:], b[2:]))


def _refuse_conflicts(results: list[FileResult], known: dict[str, dict]) -> None:
    """Fail every file of a pseudonym that two different people would share (never merge them),
    in this job or with the project's reverse map (``known``)."""
    by_pseudonym: dict[str, list[FileResult]] = {}
    for r in results:
        if r.status == "ok" and r.patient:
            by_pseudonym.setdefault(r.patient["pseudonym"], []).append(r)
    for pseudonym, group in by_pseudonym.items():
        identities = {_identity(r.patient) for r in group}
        if pseudonym in known:
            identities.add(_identity(known[pseudonym]))
        if len(identities) < 2:
            continue
        first = next(iter(identities))
        if all(_agree(first, other) for other in identities):
            continue
        for r in group:
            r.status = "failed"
            r.reason = (
                "conflicting identity: files with the same Patient ID and Issuer of Patient ID (or the "
                "same study subject) carry different patient names or birth dates; refused instead of "
                "merging two people (set Issuer of Patient ID or correct the source)"
            )


def _withhold_findings(results: list[FileResult], stage: Path) -> None:
    """A file with a leak-scan finding is quarantined (reason: tag path and kind), not released."""
    for r in results:
        if r.status == "ok" and r.findings:
            first = r.findings[0]
            r.status = "quarantined"
            r.reason = (f"leak scan: identifying {first['kind']} in {first['tag']} {first['keyword']}".rstrip()
                        + (f" (+{len(r.findings) - 1} more)" if len(r.findings) > 1 else ""))
            (stage / r.output).unlink(missing_ok=True)


def _collect(results: list[FileResult], report: JobReport) -> None:
    rows: set[tuple[str, str, str, str]] = set()
    seen: dict[str, str] = {}
    objects: dict[str, dict] = {}
    for r in results:
        rows.update(tuple(x) for x in r.record)
        report.findings += [{k: v for k, v in f.items() if k != "output"} for f in r.findings]
        if r.status == "failed":
            report.failed.append({"path": r.source, "reason": r.reason})
        elif r.status == "quarantined":
            report.quarantined.append({"path": r.source, "reason": r.reason})
        elif r.status == "skipped":
            report.skipped.append({"path": r.source, "reason": r.reason})
        else:
            if r.output in seen:
                report.failed.append({"path": r.source, "reason": f"same SOP Instance UID as {seen[r.output]}"})
                continue
            seen[r.output] = r.source
            report.outputs.append(r.output)
            report.reverse_map.uids.update(r.uid_map)
            if r.patient:
                known = report.reverse_map.patients.get(r.patient["pseudonym"])
                if known is None:
                    known = report.reverse_map.patients[r.patient["pseudonym"]] = dict(r.patient)
                known["shifted_dates"] = sorted(set(known.get("shifted_dates", ())) | set(r.shifted_dates))
            if r.study:
                report.reverse_map.studies[r.study["uid"]] = r.study
            objects[r.output] = r.references
    report.record = [dict(zip(RECORD_FIELDS, row)) for row in sorted(rows)]
    report.rt = resolve_references(objects)


def _release(stage: Path, dst: Path, outputs: list[str]) -> None:
    """Move the staged files into ``dst``: one rename when DST is new or empty, else per study."""
    if not outputs:
        return
    released = {rel for rel in outputs}
    # Anything staged but not released (withheld, duplicate) must not travel with a folder rename.
    for root, _, names in os.walk(stage):
        for name in names:
            path = Path(root) / name
            if str(path.relative_to(stage)) not in released:
                path.unlink()
    for root, dirs, names in os.walk(stage, topdown=False):
        if Path(root) != stage and not os.listdir(root):
            os.rmdir(root)
    if stage.parent == dst.parent and stage.name != dst.name:
        try:
            if dst.exists() and not any(dst.iterdir()):
                dst.rmdir()
            if not dst.exists():
                os.replace(stage, dst)  # one atomic rename: the whole output appears at once
                return
        except OSError:
            pass
    studies: dict[str, list[str]] = {}
    for rel in outputs:
        studies.setdefault(rel.split("/", 1)[0], []).append(rel)
    for study, rels in studies.items():
        staged = stage / study
        if not (dst / study).exists():
            dst.mkdir(parents=True, exist_ok=True)
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
