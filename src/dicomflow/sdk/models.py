"""Typed values the SDK returns (plain dataclasses; unknown fields from newer servers are ignored)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Patient:
    id: int
    patient_id: str
    patient_name: str = ""
    issuer_of_patient_id: str = ""
    birth_date: str | None = None
    sex: str = ""
    project: str | None = None
    study_count: int | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class Study:
    study_instance_uid: str
    patient: int
    patient_id: str = ""
    study_date: str | None = None
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    description: str = ""
    project: str | None = None
    series_count: int | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class Series:
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    patient: int | None = None
    series_number: int | None = None
    description: str = ""
    series_date: str | None = None
    body_part_examined: str = ""
    frame_of_reference_uid: str = ""
    project: str | None = None
    instance_count: int | None = None
    created_at: str | None = None
    image: dict | None = None  # geometry (detail only)
    rt: dict | None = None  # structure sets / plans / doses / RT images (detail only)
    checks: dict | None = None  # stored check result (detail only)
    processing: dict | None = None  # processing status and template (detail only)


@dataclass(frozen=True)
class Instance:
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    instance_number: int | None = None
    transfer_syntax_uid: str = ""
    sha256: str = ""
    size: int = 0
    received_at: str | None = None
    image: dict | None = None


@dataclass(frozen=True)
class ImportRun:
    id: int
    source_kind: str
    source: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    files_seen: int = 0
    instances_new: int = 0
    instances_duplicate: int = 0
    conflicts: Any = None  # a count in lists, [{"path", "reason"}] in details
    ignored: Any = None


@dataclass(frozen=True)
class ImportResult:
    """What an upload's import did: the ``dicomflow import --json`` counters."""

    files_seen: int
    instances_new: int
    instances_duplicate: int
    conflicts: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)
    patients: int = 0
    studies: int = 0
    series: int = 0
    series_uids: list[str] = field(default_factory=list)
    import_run: int | None = None
    session: str | None = None  # the upload's id
    study_uids: list[str] | None = None  # the upload's studies, when the server lists them
    job_ids: list[int] | None = None  # processing jobs the upload started (template/rules), when listed

    @property
    def upload_id(self) -> str | None:
        return self.session


@dataclass(frozen=True)
class UploadSession:
    id: str
    status: str
    file_count: int = 0
    files_complete: int = 0
    total_size: int = 0
    received_size: int = 0
    import_done: int = 0
    import_total: int = 0
    import_run: int | None = None
    result: dict | None = None
    error_message: str = ""
    finished: bool = False
    created_at: str | None = None
    finished_at: str | None = None
    source_kind: str = ""
    files: list[dict] | None = None
    project: str | None = None
    subject: str | None = None
    event: str | None = None
    slot: str | None = None
    template: str | None = None
    studies: list[str] | None = None  # study UIDs the import touched (newer servers)
    jobs: list[int] | None = None  # processing jobs it started (newer servers)
    progress: dict | None = None  # {"status", "stage", "done", "total", "percent", "started_at", "finished_at", "error"}


@dataclass(frozen=True)
class UploadProblems:
    """What an upload could not take: ``ignored`` and ``conflicts`` are ``[{"path", "reason"}]``
    (paths inside the upload), ``error`` the reason a failed upload gives (else "")."""

    status: str
    ignored: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not (self.ignored or self.conflicts or self.error)


@dataclass(frozen=True)
class Job:
    """A processing job; ``stages`` (detail only): ``[{"name", "status", "done", "total", "error"}]``."""

    id: int
    status: str
    project_key: str = ""
    current_stage: str = ""
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None  # newer servers
    template: str | None = None
    require_qc: bool = False
    error: str = ""
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    stages: list[dict] | None = None
    results: list[str] | None = None
    progress: dict | None = None  # the one progress format of long jobs
