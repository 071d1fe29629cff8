"""Synthetic, realistic DICOM test data: CT/MR series and linked RT objects.

Why: every test of dicomflow needs DICOM files whose truth is known (geometry, references, the
organs in the pixels) and nothing may be downloaded. This module writes proper Part 10 files with
pydicom 3 (Explicit VR Little Endian, or Implicit with ``implicit_vr=True``) that pass
``dciodvfy`` without errors.

API (every writer takes ``seed``, ``implicit_vr``, ``extra`` and ``decorate``):

- ``write_image_series(out_dir, patient, modality="CT"|"MR", n_slices, rows, cols, ...)`` ->
  :class:`SeriesInfo`: a phantom series, classic or enhanced (``multiframe=True``), any
  orientation (``oblique_orientation(deg)``), ``skip_slices``, ``slice_offsets`` (irregular or
  duplicate positions). ``out_dir=None`` only describes a series (an "absent CT").
- ``phantom_masks(series_or_geometry)`` -> (body, lungs) boolean masks, (slice, row, col): the
  ground truth (body ellipse 0 HU holding two lungs -800 HU, air -1000 HU outside; the lungs
  occupy the middle 70 % of the stack).
- ``write_rtstruct(out_dir, series, rois=DEFAULT_ROIS)``, ``write_rtplan(out_dir, rs | None,
  approved, image_series=...)``, ``write_rtdose(out_dir, plan)``, ``write_rtimage(out_dir, plan)``,
  ``write_registration(out_dir, fixed, moving)`` -> :class:`RTInfo` (UIDs, path, references).
- ``write_rt_study(out_dir, patient, ...)`` -> :class:`StudyInfo`: CT, RTSTRUCT, an APPROVED and
  an UNAPPROVED plan, a dose for each, an RT image on the approved plan, an unrelated MR (own
  study and frame of reference); optional orphan structure set (CT absent), plan without
  structure set, REG. ``StudyInfo.edges`` lists the series-level references written.
- ``write_secondary_capture`` (burned-in annotation), ``write_dicomdir`` (media folder),
  ``write_zip``, ``write_multi_patient_zip`` (members ``<PatientID>/<series>/<file>``).
- CLI: ``python -m dicomflow.testing ct|rt-study|zip ...`` prints a JSON summary.

Determinism: give ``seed`` (an int) and every UID, value and noise sample is reproducible; without
it every call yields fresh UIDs (``2.25.<uuid4>``). UIDs are drawn per object kind
(``Random(f"{seed}:{kind}")``) so different writers called with the same seed do not collide,
while the same writer with the same seed repeats its UIDs (handy for duplicate/conflict tests).
Distinct patients: ``PatientSpec.for_id(ID, seed)`` and ``patient_seed(seed, ID)`` (what the CLI's
``--patient-id ID --seed N`` use) give each Patient ID its own values and UIDs under one seed.

Speed: the per-slice dataset is built once and only the changing attributes are set per slice;
pixel bytes come from two precomputed slice templates plus a few cycled noise fields, so a
1000-slice 512x512 CT (~500 MB) is written in a few seconds.

Identifying values look real (names, IDs, dates, institution, physicians) so that
de-identification tests have something to remove; ``extra`` (keyword -> value) and ``decorate``
(a callable on every dataset just before it is written; image slices get their own copy) let
callers plant more.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
)

# --------------------------------------------------------------------------------------------
# SOP classes
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
RT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.1"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # what TPSs put in RT Referenced Study

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

AIR_HU, LUNG_HU, BODY_HU = -1000, -800, 0
DEFAULT_FOV_MM = 500.0
STUDY_DATE, STUDY_TIME = "20240315", "101500"

# Realistic identifying values every dataset carries (overridable through ``extra``).
DEFAULT_IDENTIFYING: dict[str, Any] = {
    "InstitutionName": "St. Example General Hospital",
    "InstitutionAddress": "12 Harbour Road, Springfield",
    "InstitutionalDepartmentName": "Radiation Oncology",
    "ReferringPhysicianName": "Smith^John^^Dr.",
    "PhysiciansOfRecord": "Miller^Anne^^Dr.",
    "OperatorsName": "Tech^Paula",
    "StationName": "RTCT01",
    "DeviceSerialNumber": "SN4711",
}


# --------------------------------------------------------------------------------------------
# UIDs and patients
class UIDGenerator:
    """Callable giving ``2.25.<int>`` UIDs: reproducible from a seed, random (uuid4) without."""

    def __init__(self, seed: int | str | None = None, kind: str = ""):
        self._rng = random.Random(f"{seed}:{kind}") if seed is not None else None

    def __call__(self) -> str:
        value = self._rng.getrandbits(128) if self._rng else uuid.uuid4().int
        return f"2.25.{value or 1}"


def _uids(seed, kind: str) -> UIDGenerator:
    return seed if isinstance(seed, UIDGenerator) else UIDGenerator(seed, kind)


@dataclass(frozen=True)
class PatientSpec:
    """The patient every written dataset names (identifying values, realistic on purpose)."""

    patient_id: str = "PAT0001"
    name: str = "Doe^Jane"
    sex: str = "F"
    birth_date: str = "19650412"

    @classmethod
    def random(cls, rng: random.Random, index: int = 0) -> PatientSpec:
        """A plausible patient from ``rng`` (used for multi-patient data)."""
        sex = rng.choice("FM")
        given = rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M)
        family = rng.choice(_FAMILY)
        birth = f"{rng.randint(1935, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        return cls(f"PAT{index + 1:04d}{rng.randint(100, 999)}", f"{family}^{given}", sex, birth)

    @classmethod
    def for_id(cls, patient_id: str, seed=None) -> PatientSpec:
        """A patient with this ID and plausible name, sex and birth date drawn from ``(seed, ID)``:
        the same pair gives the same patient, another seed or ID another one; no seed, a fresh one."""
        rng = random.Random(f"{seed}:patient:{patient_id}") if seed is not None else random.Random()
        return replace(cls.random(rng), patient_id=patient_id)


def patient_seed(seed, patient_id: str | None):
    """The seed a patient's data is written with: ``seed`` mixed with the Patient ID, so that two
    patients written with the same seed never share a UID (None stays None: fresh UIDs)."""
    return seed if patient_id is None else _child(seed, f"patient:{patient_id}")


_GIVEN_F = ["Jane", "Maria", "Anna", "Laura", "Sofia", "Emma", "Clara", "Ines"]
_GIVEN_M = ["John", "Peter", "Lukas", "David", "Marco", "Jonas", "Felix", "Tom"]
_FAMILY = ["Doe", "Smith", "Meyer", "Garcia", "Rossi", "Novak", "Jansen", "Dubois", "Kowalski"]


# --------------------------------------------------------------------------------------------
# Geometry and phantom
@dataclass(frozen=True)
class Geometry:
    """A regular slice stack: slice k's position is ``origin + k * spacing * normal``."""

    n_slices: int
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns) as in PixelSpacing
    slice_spacing: float
    orientation: tuple[float, ...] = AXIAL
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def row_dir(self) -> np.ndarray:  # direction of increasing column index
        return np.asarray(self.orientation[:3], float)

    @property
    def col_dir(self) -> np.ndarray:  # direction of increasing row index
        return np.asarray(self.orientation[3:], float)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def position(self, k: float) -> np.ndarray:
        """ImagePositionPatient of slice ``k`` (may be fractional)."""
        return np.asarray(self.origin, float) + k * self.slice_spacing * self.normal

    def to_patient(self, k: float, r, c) -> np.ndarray:
        """Patient coordinates (mm, shape (..., 3)) of pixel (row r, column c) on slice k."""
        r = np.asarray(r, float)[..., None]
        c = np.asarray(c, float)[..., None]
        return (self.position(k) + c * self.pixel_spacing[1] * self.row_dir
                + r * self.pixel_spacing[0] * self.col_dir)

    def affine(self, ras: bool = False) -> np.ndarray:
        """4x4 matrix from (col, row, slice) indices to patient mm: DICOM LPS, or the RAS that
        NIfTI (nibabel) uses with ``ras=True`` (x and y negated)."""
        a = np.eye(4)
        a[:3, 0] = self.row_dir * self.pixel_spacing[1]
        a[:3, 1] = self.col_dir * self.pixel_spacing[0]
        a[:3, 2] = self.normal * self.slice_spacing
        a[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a if ras else a


# Phantom shapes as ellipses in normalized in-plane coordinates u (columns), v (rows) in [-1, 1]:
# (centre_u, centre_v, semi_u, semi_v). The body holds both lungs with a margin.
_BODY = (0.0, 0.0, 0.80, 0.55)
_LUNG_L = (0.32, -0.05, 0.20, 0.30)  # +u = +x (patient left) in the default axial orientation
_LUNG_R = (-0.32, -0.05, 0.20, 0.30)
_PTV = (-0.30, -0.05, 0.07, 0.09)  # inside the right lung
LUNG_RANGE = (0.15, 0.85)  # fraction of the stack where the lungs are
PTV_RANGE = (0.40, 0.60)


def _in_range(k: int, n: int, rng: tuple[float, float]) -> bool:
    if n < 4:
        return True
    f = k / (n - 1)
    return rng[0] <= f <= rng[1]


def _ellipse_mask(rows: int, cols: int, shape) -> np.ndarray:
    cu, cv, au, av = shape
    v = (np.arange(rows) - (rows - 1) / 2) / (rows / 2)
    u = (np.arange(cols) - (cols - 1) / 2) / (cols / 2)
    return ((u[None, :] - cu) / au) ** 2 + ((v[:, None] - cv) / av) ** 2 <= 1.0


class PhantomMasks(NamedTuple):
    """Ground truth in (slice, row, col) order; ``body`` includes the lungs (external outline)."""

    body: np.ndarray
    lungs: np.ndarray


def _geometry_of(obj) -> Geometry:
    return obj.geometry if hasattr(obj, "geometry") else obj


def phantom_masks(series_or_geometry) -> PhantomMasks:
    """Boolean body and lung masks for every slice written (skipped slices left out).

    Accepts a :class:`SeriesInfo` (respects its ``skip_slices``) or a :class:`Geometry`.
    """
    geo = _geometry_of(series_or_geometry)
    indices = getattr(series_or_geometry, "slice_indices", None) or list(range(geo.n_slices))
    body2d = _ellipse_mask(geo.rows, geo.cols, _BODY)
    lungs2d = _ellipse_mask(geo.rows, geo.cols, _LUNG_L) | _ellipse_mask(geo.rows, geo.cols, _LUNG_R)
    body = np.repeat(body2d[None], len(indices), axis=0)
    lungs = np.zeros_like(body)
    for i, k in enumerate(indices):
        if _in_range(k, geo.n_slices, LUNG_RANGE):
            lungs[i] = lungs2d
    return PhantomMasks(body, lungs)


def _slice_templates(geo: Geometry, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Stored-value slices (without lungs, with lungs) as int32 before noise."""
    body = _ellipse_mask(geo.rows, geo.cols, _BODY)
    lungs = _ellipse_mask(geo.rows, geo.cols, _LUNG_L) | _ellipse_mask(geo.rows, geo.cols, _LUNG_R)
    if modality == "CT":  # stored = HU + 1024 (RescaleIntercept -1024)
        air, lung, tissue = AIR_HU + 1024, LUNG_HU + 1024, BODY_HU + 1024
    else:  # MR signal: air dark, lungs dark-ish, tissue bright
        air, lung, tissue = 0, 60, 800
    plain = np.full((geo.rows, geo.cols), air, np.int32)
    plain[body] = tissue
    with_lungs = plain.copy()
    with_lungs[lungs] = lung
    return plain, with_lungs


class _PixelSource:
    """Per-slice pixel bytes: template + one of a few cycled noise fields (fast, vectorised)."""

    def __init__(self, geo: Geometry, modality: str, noise: float, seed, max_value: int):
        self.geo = geo
        self.templates = _slice_templates(geo, modality)
        self.max_value = max_value
        if isinstance(seed, UIDGenerator):
            seed = seed()
        rng = np.random.default_rng(None if seed is None else [hash_int(seed), 7])
        self.noise = []
        if noise > 0:
            shape = (geo.rows, geo.cols)
            self.noise = [np.rint(rng.normal(0, noise, shape)).astype(np.int32)
                          for _ in range(min(8, geo.n_slices))]
        self._cache: dict[tuple[int, int], bytes] = {}

    def array(self, k: int) -> np.ndarray:
        has_lungs = _in_range(k, self.geo.n_slices, LUNG_RANGE)
        base = self.templates[1 if has_lungs else 0]
        if self.noise:
            base = base + self.noise[k % len(self.noise)]
            np.clip(base, 0, self.max_value, out=base)
        return base.astype("<u2")

    def bytes(self, k: int) -> bytes:
        has_lungs = _in_range(k, self.geo.n_slices, LUNG_RANGE)
        key = (int(has_lungs), k % len(self.noise) if self.noise else 0)
        data = self._cache.get(key)
        if data is None:
            data = self.array(k).tobytes()
            if len(self._cache) < 32:
                self._cache[key] = data
        return data


def hash_int(value) -> int:
    """A stable 63-bit integer from any value (seeds for numpy)."""
    return int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------------------------
# Results
@dataclass
class SeriesInfo:
    """What :func:`write_image_series` wrote (or, with ``out_dir=None``, would have written)."""

    patient: PatientSpec
    modality: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: list[str]
    paths: list[Path]
    positions: list[tuple[float, float, float]]
    geometry: Geometry
    slice_indices: list[int]
    skipped_positions: list[tuple[float, float, float]] = field(default_factory=list)
    multiframe: bool = False
    transfer_syntax_uid: str = ExplicitVRLittleEndian

    @property
    def normal(self) -> np.ndarray:
        return self.geometry.normal

    @property
    def skipped_locations(self) -> list[float]:
        """Missing slice positions in mm along the slice normal (what completeness reports)."""
        return [float(np.dot(p, self.normal)) for p in self.skipped_positions]

    @property
    def written(self) -> bool:
        return bool(self.paths)


@dataclass
class RTInfo:
    """One written RT object and what it references."""

    modality: str
    patient: PatientSpec
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    path: Path | None
    frame_of_reference_uid: str | None
    referenced_series_uids: list[str] = field(default_factory=list)
    referenced_sop_instance_uids: list[str] = field(default_factory=list)
    label: str = ""
    approval_status: str | None = None
    beam_numbers: list[int] = field(default_factory=list)
    roi_names: list[str] = field(default_factory=list)
    image_series: SeriesInfo | None = None

    @property
    def paths(self) -> list[Path]:
        return [self.path] if self.path else []


@dataclass
class StudyInfo:
    """A whole planning study written by :func:`write_rt_study`."""

    patient: PatientSpec
    study_uid: str
    ct: SeriesInfo
    rtstruct: RTInfo
    plans: list[RTInfo]  # [approved, unapproved] (+ plan without structure set if asked)
    doses: list[RTInfo]  # one per plan, same order
    rtimage: RTInfo
    mr: SeriesInfo | None = None
    orphan_rtstruct: RTInfo | None = None  # references ``absent_ct``, which is not written
    absent_ct: SeriesInfo | None = None
    out_dir: Path | None = None
    registration: RTInfo | None = None  # REG linking the MR's frame of reference to the CT's

    @property
    def approved_plan(self) -> RTInfo:
        return next(p for p in self.plans if p.approval_status == "APPROVED")

    @property
    def unapproved_plan(self) -> RTInfo:
        return next(p for p in self.plans if p.approval_status == "UNAPPROVED")

    def dose_for(self, plan: RTInfo) -> RTInfo:
        return next(d for d in self.doses if plan.sop_instance_uid in d.referenced_sop_instance_uids)

    @property
    def rt_objects(self) -> list[RTInfo]:
        objs = [self.rtstruct, *self.plans, *self.doses, self.rtimage]
        objs += [self.orphan_rtstruct] if self.orphan_rtstruct else []
        return objs + ([self.registration] if self.registration else [])

    @property
    def paths(self) -> list[Path]:
        out = list(self.ct.paths) + [p for o in self.rt_objects for p in o.paths]
        return out + (list(self.mr.paths) if self.mr else [])

    @property
    def edges(self) -> set[tuple[str, str]]:
        """Series-level reference edges (from, to) as written, including the plan without a
        structure set (-> CT through its frame of reference) and the orphan (-> absent CT)."""
        out = {(self.rtstruct.series_uid, self.ct.series_uid)}
        for plan in self.plans:
            out.add((plan.series_uid, plan.referenced_series_uids[0] if plan.referenced_series_uids
                     else self.ct.series_uid))
        for obj in (*self.doses, self.rtimage):
            out.add((obj.series_uid, obj.referenced_series_uids[0]))
        if self.orphan_rtstruct and self.absent_ct:
            out.add((self.orphan_rtstruct.series_uid, self.absent_ct.series_uid))
        if self.registration:
            out |= {(self.registration.series_uid, s)
                    for s in self.registration.referenced_series_uids}
        return out

    @property
    def series_uids(self) -> list[str]:
        uids = [self.ct.series_uid] + [o.series_uid for o in self.rt_objects]
        return uids + ([self.mr.series_uid] if self.mr else [])


# --------------------------------------------------------------------------------------------
# Dataset building blocks
def _ds(value: float, nd: int = 4) -> str:
    """DS text within 16 characters."""
    text = f"{value:.{nd}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _ds_list(values: Iterable[float], nd: int = 4) -> list[str]:
    return [_ds(v, nd) for v in values]


def _accession(study_uid: str) -> str:
    return f"A{hash_int(study_uid) % 10**8:08d}"


def _common(ds: Dataset, patient: PatientSpec, study_uid: str, modality: str, series_uid: str,
            series_number: int, sop_class: str, study_description: str = "RT planning thorax"):
    """Patient, General Study, (RT/General) Series, General Equipment and SOP Common basics."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = STUDY_DATE
    ds.InstanceCreationTime = "120000"
    ds.SOPClassUID = sop_class
    ds.StudyDate = STUDY_DATE
    ds.SeriesDate = STUDY_DATE
    ds.StudyTime = STUDY_TIME
    ds.SeriesTime = STUDY_TIME
    ds.AccessionNumber = _accession(study_uid)
    ds.Modality = modality
    ds.Manufacturer = "dicomflow synthetic"
    ds.ManufacturerModelName = "Phantom-1"
    ds.SoftwareVersions = "1.0"
    for key, value in DEFAULT_IDENTIFYING.items():
        setattr(ds, key, value)
    ds.StudyDescription = study_description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{max(0, int(STUDY_DATE[:4]) - int(patient.birth_date[:4] or 1970)):03d}Y"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"S{hash_int(study_uid) % 10**6:06d}"
    ds.SeriesNumber = series_number


def _finish(ds: Dataset, sop_uid: str, implicit_vr: bool, extra, decorate) -> Dataset:
    ds.SOPInstanceUID = sop_uid
    meta = ds.file_meta if hasattr(ds, "file_meta") and ds.file_meta else FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DICOMFLOW_SYN"
    ds.file_meta = meta
    if extra:
        for key, value in extra.items():
            setattr(ds, key, value)
    if decorate:
        decorate(ds)
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _item(**kw) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _out(out_dir) -> Path:
    p = Path(out_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------------------------
# Image series
def make_geometry(n_slices=20, rows=64, cols=64, pixel_spacing=None, slice_thickness=2.5,
                  spacing_between_slices=None, orientation=AXIAL, origin=None) -> Geometry:
    """A geometry with defaults of a real planning CT (500 mm field of view, centred)."""
    if pixel_spacing is None:
        pixel_spacing = (DEFAULT_FOV_MM / rows, DEFAULT_FOV_MM / cols)
    pixel_spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    orientation = tuple(float(x) for x in orientation)
    r, c = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    if abs(np.linalg.norm(r) - 1) > 1e-4 or abs(np.linalg.norm(c) - 1) > 1e-4 or abs(r @ c) > 1e-4:
        raise ValueError("orientation must be two orthonormal direction cosines")
    spacing = float(spacing_between_slices or slice_thickness)
    if origin is None:  # centre the volume on the isocentre (0, 0, 0)
        n = np.cross(r, c)
        origin = -(((cols - 1) / 2) * pixel_spacing[1] * r + ((rows - 1) / 2) * pixel_spacing[0] * c
                   + ((n_slices - 1) / 2) * spacing * n)
        origin = tuple(float(round(x, 4)) for x in origin)
    return Geometry(int(n_slices), int(rows), int(cols), pixel_spacing, spacing, orientation,
                    tuple(float(x) for x in origin))


def oblique_orientation(degrees: float = 20.0) -> tuple[float, ...]:
    """An axial orientation tilted by ``degrees`` about the patient's left-right axis."""
    a = np.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a)))


def _image_header(geo: Geometry, modality: str, patient: PatientSpec, study_uid: str,
                  series_uid: str, for_uid: str, slice_thickness: float, series_number: int,
                  series_description: str, study_description: str) -> Dataset:
    ds = Dataset()
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    _common(ds, patient, study_uid, modality, series_uid, series_number, sop_class, study_description)
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = STUDY_TIME
    ds.AcquisitionDate = STUDY_DATE
    ds.AcquisitionTime = STUDY_TIME
    ds.AcquisitionNumber = 1
    ds.PatientOrientation = ""
    ds.ImageOrientationPatient = _ds_list(geo.orientation, 10)
    ds.PixelSpacing = _ds_list(geo.pixel_spacing, 6)
    ds.SliceThickness = _ds(slice_thickness)
    ds.SpacingBetweenSlices = _ds(geo.slice_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geo.rows
    ds.Columns = geo.cols
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.DataCollectionDiameter = _ds(geo.cols * geo.pixel_spacing[1])
        ds.ReconstructionDiameter = _ds(geo.cols * geo.pixel_spacing[1])
        ds.ConvolutionKernel = "STANDARD"
        ds.ExposureTime = 1000
        ds.XRayTubeCurrent = 200
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.WindowCenterWidthExplanation = "SOFT_TISSUE"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = "1.5"
        ds.ImagedNucleus = "1H"
        ds.ImagingFrequency = "63.87"
        ds.WindowCenter = "400"
        ds.WindowWidth = "800"
    return ds


def write_image_series(out_dir, patient: PatientSpec | None = None, modality: str = "CT",
                       n_slices: int = 20, rows: int = 64, cols: int = 64,
                       pixel_spacing: Sequence[float] | None = None, slice_thickness: float = 2.5,
                       spacing_between_slices: float | None = None,
                       orientation: Sequence[float] = AXIAL, origin: Sequence[float] | None = None,
                       study_uid: str | None = None, frame_of_reference_uid: str | None = None,
                       series_uid: str | None = None, skip_slices: Iterable[int] = (),
                       multiframe: bool = False, noise: float = 5.0, implicit_vr: bool = False,
                       seed=None, extra: dict | None = None,
                       decorate: Callable[[Dataset], None] | None = None, series_number: int = 1,
                       series_description: str | None = None,
                       study_description: str = "RT planning thorax",
                       slice_offsets: Sequence[float] | None = None) -> SeriesInfo:
    """Write a CT or MR phantom series; ``out_dir=None`` only describes it (nothing written).

    Files are named like a TPS export: ``CT.<SOPInstanceUID>.dcm``. ``skip_slices`` are slice
    indices (0-based) left out; ``multiframe`` writes one Enhanced CT/MR instance instead.
    ``slice_offsets`` (mm along the normal from ``origin``, one per slice; sets ``n_slices``)
    replaces the regular spacing, for irregular or duplicate positions.
    """
    modality = modality.upper()
    if slice_offsets is not None:
        slice_offsets = [float(x) for x in slice_offsets]
        n_slices = len(slice_offsets)
    if modality not in ("CT", "MR"):
        raise ValueError("modality must be CT or MR")
    patient = patient or PatientSpec()
    geo = make_geometry(n_slices, rows, cols, pixel_spacing, slice_thickness,
                        spacing_between_slices, orientation, origin)
    uid = _uids(seed, f"series-{modality}-{series_number}")
    study_uid = study_uid or uid()
    series_uid = series_uid or uid()
    for_uid = frame_of_reference_uid or uid()
    skip = set(int(k) for k in skip_slices)
    indices = [k for k in range(geo.n_slices) if k not in skip]
    sop_uids = [uid() for _ in range(geo.n_slices)]
    if slice_offsets is None:
        raw_positions = [geo.position(k) for k in range(geo.n_slices)]
    else:
        raw_positions = [np.asarray(geo.origin) + off * geo.normal for off in slice_offsets]
    positions = [tuple(float(round(x, 4)) for x in p) for p in raw_positions]
    info = SeriesInfo(
        patient=patient, modality=modality, study_uid=study_uid, series_uid=series_uid,
        frame_of_reference_uid=for_uid,
        sop_class_uid=CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE,
        sop_instance_uids=[sop_uids[k] for k in indices], paths=[],
        positions=[positions[k] for k in indices], geometry=geo, slice_indices=indices,
        skipped_positions=[positions[k] for k in sorted(skip) if 0 <= k < geo.n_slices],
        multiframe=multiframe,
        transfer_syntax_uid=ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian)
    description = series_description or (f"{modality} thorax" + (" enhanced" if multiframe else ""))
    ds = _image_header(geo, modality, patient, study_uid, series_uid, for_uid, slice_thickness,
                       series_number, description, study_description)
    pixels = _PixelSource(geo, modality, noise, seed, 4095 if modality == "CT" else 65535)
    if out_dir is None:
        return info
    out = _out(out_dir)
    if multiframe:
        sop = uid()
        info.sop_class_uid = ENHANCED_CT_IMAGE_STORAGE if modality == "CT" else ENHANCED_MR_IMAGE_STORAGE
        info.sop_instance_uids = [sop]
        path = out / f"{modality}.{sop}.dcm"
        _write_enhanced(path, ds, info, pixels, sop, uid, implicit_vr, extra, decorate)
        info.paths = [path]
        return info
    for k, sop in zip(indices, info.sop_instance_uids):
        # The header is reused across slices (fast); a decorate hook gets its own copy so that
        # what it does to one slice does not leak into the next.
        sds = copy.deepcopy(ds) if decorate else ds
        sds.InstanceNumber = k + 1
        sds.ImagePositionPatient = _ds_list(positions[k])
        sds.SliceLocation = _ds(float(np.dot(positions[k], geo.normal)))
        sds.PixelData = pixels.bytes(k)
        _finish(sds, sop, implicit_vr, extra, decorate)
        path = out / f"{modality}.{sop}.dcm"
        _write(sds, path)
        info.paths.append(path)
    return info


_PER_SLICE = ("ImageType", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
              "SliceThickness", "SpacingBetweenSlices", "SliceLocation", "RescaleIntercept",
              "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth",
              "WindowCenterWidthExplanation", "PatientOrientation", "KVP", "DataCollectionDiameter",
              "ReconstructionDiameter", "ConvolutionKernel", "ExposureTime", "XRayTubeCurrent",
              "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
              "RepetitionTime", "EchoTime", "EchoTrainLength", "MagneticFieldStrength",
              "ImagedNucleus", "ImagingFrequency", "AcquisitionDate", "AcquisitionTime")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _write_enhanced(path: Path, header: Dataset, info: SeriesInfo, pixels: _PixelSource, sop: str,
                    uid: UIDGenerator, implicit_vr: bool, extra, decorate) -> None:
    """One Enhanced CT/MR instance: geometry in shared (orientation, pixel measures) and
    per-frame (plane position, frame content) functional groups, a stack dimension."""
    geo, modality = info.geometry, info.modality
    ds = Dataset()
    for elem in header:
        if elem.keyword not in _PER_SLICE:
            ds.add(elem)
    ds.SOPClassUID = info.sop_class_uid
    frame_type = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.ImageType = frame_type
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(info.slice_indices)
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.AcquisitionDuration = 1.0
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence()
    if modality == "MR":
        ds.ComplexImageComponent = "MAGNITUDE"
        ds.AcquisitionContrast = "T1"
        ds.ApplicableSafetyStandardAgency = "IEC"
    dim_uid = uid()
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = DicomSequence([
        _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209056,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209057,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="In-Stack Position")])
    shared = _item(
        PixelMeasuresSequence=DicomSequence([_item(
            PixelSpacing=_ds_list(geo.pixel_spacing, 6), SliceThickness=header.SliceThickness,
            SpacingBetweenSlices=header.SpacingBetweenSlices)]),
        PlaneOrientationSequence=DicomSequence([_item(
            ImageOrientationPatient=_ds_list(geo.orientation, 10))]),
        FrameAnatomySequence=DicomSequence([_item(
            AnatomicRegionSequence=DicomSequence([_code("51185008", "SCT", "Thorax")]),
            FrameLaterality="U")]),
        FrameVOILUTSequence=DicomSequence([_item(WindowCenter=header.WindowCenter,
                                                 WindowWidth=header.WindowWidth)]),
    )
    if modality == "CT":
        shared.PixelValueTransformationSequence = DicomSequence([_item(
            RescaleIntercept="-1024", RescaleSlope="1", RescaleType="HU")])
        shared.CTImageFrameTypeSequence = DicomSequence([_item(
            FrameType=frame_type, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
            VolumeBasedCalculationTechnique="NONE")])
        shared.IrradiationEventIdentificationSequence = DicomSequence([_item(
            IrradiationEventUID=uid())])
    else:
        shared.PixelValueTransformationSequence = DicomSequence([_item(
            RescaleIntercept="0", RescaleSlope="1", RescaleType="US")])
        shared.MRImageFrameTypeSequence = DicomSequence([_item(
            FrameType=frame_type, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
            VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
            AcquisitionContrast="T1")])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame, chunks = [], []
    for n, k in enumerate(info.slice_indices):
        per_frame.append(_item(
            FrameContentSequence=DicomSequence([_item(
                StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[1, k + 1],
                FrameAcquisitionDateTime=STUDY_DATE + STUDY_TIME,
                FrameReferenceDateTime=STUDY_DATE + STUDY_TIME, FrameAcquisitionDuration=1.0)]),
            PlanePositionSequence=DicomSequence([_item(
                ImagePositionPatient=_ds_list(info.positions[n]))])))
        chunks.append(pixels.bytes(k))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = b"".join(chunks)
    _finish(ds, sop, implicit_vr, extra, decorate)
    _write(ds, path)


# --------------------------------------------------------------------------------------------
# RT objects
@dataclass(frozen=True)
class ROISpec:
    """One ROI.

    ``shape``: "body", "lung_left", "lung_right", "ptv", None (an ROI with no contours) or an
    ellipse ``(centre_u, centre_v, semi_u, semi_v)`` in normalized in-plane coordinates
    ([-1, 1] across the image). ``slice_range``: fraction of the stack holding it (None: the
    shape's own; a custom ellipse defaults to every slice). ``offset_mm``: a shift of every
    contour point in patient coordinates (e.g. to put an ROI outside the image volume).
    """

    name: str
    interpreted_type: str
    color: tuple[int, int, int]
    shape: str | tuple[float, float, float, float] | None
    slice_range: tuple[float, float] | None = None
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


DEFAULT_ROIS = (
    ROISpec("BODY", "EXTERNAL", (0, 255, 0), "body"),
    ROISpec("Lung_L", "ORGAN", (0, 128, 255), "lung_left"),
    ROISpec("Lung_R", "ORGAN", (255, 128, 0), "lung_right"),
    ROISpec("PTV", "PTV", (255, 0, 0), "ptv"),
)
_SHAPES = {"body": (_BODY, None), "lung_left": (_LUNG_L, LUNG_RANGE),
           "lung_right": (_LUNG_R, LUNG_RANGE), "ptv": (_PTV, PTV_RANGE)}


def _ellipse_contour(geo: Geometry, ipp, shape, n_points: int = 64) -> list[str]:
    """CLOSED_PLANAR contour (patient mm) of a phantom ellipse on the slice at ``ipp``."""
    cu, cv, au, av = shape
    t = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    u, v = cu + au * np.cos(t), cv + av * np.sin(t)
    c = u * geo.cols / 2 + (geo.cols - 1) / 2
    r = v * geo.rows / 2 + (geo.rows - 1) / 2
    pts = (np.asarray(ipp, float) + c[:, None] * geo.pixel_spacing[1] * geo.row_dir
           + r[:, None] * geo.pixel_spacing[0] * geo.col_dir)
    return _ds_list(pts.ravel(), 3)


def _rt_common(modality: str, patient: PatientSpec, study_uid: str, series_uid: str,
               sop_class: str, series_number: int, description: str) -> Dataset:
    ds = Dataset()
    _common(ds, patient, study_uid, modality, series_uid, series_number, sop_class)
    ds.SeriesDescription = description
    return ds


def write_rtstruct(out_dir, image_series: SeriesInfo, rois: Sequence[ROISpec] = DEFAULT_ROIS,
                   label: str = "RTSTRUCT", approval_status: str | None = None,
                   implicit_vr: bool = False, seed=None, extra: dict | None = None,
                   decorate: Callable[[Dataset], None] | None = None,
                   series_number: int = 2) -> RTInfo:
    """Write a structure set with contours on every slice of ``image_series`` where the organ is.

    ``image_series`` may be a description only (``write_image_series(None, ...)``): the structure
    set then references a CT that is absent.
    """
    uid = _uids(seed, f"rtstruct-{image_series.series_uid}-{label}")
    series_uid, sop_uid = uid(), uid()
    geo = image_series.geometry
    img = image_series
    ds = _rt_common("RTSTRUCT", img.patient, img.study_uid, series_uid, RT_STRUCTURE_SET_STORAGE,
                    series_number, "Structure set")
    ds.FrameOfReferenceUID = img.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = label
    ds.StructureSetName = label
    ds.StructureSetDate = STUDY_DATE
    ds.StructureSetTime = "110000"
    image_refs = [_item(ReferencedSOPClassUID=img.sop_class_uid, ReferencedSOPInstanceUID=s)
                  for s in img.sop_instance_uids]
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_item(
        FrameOfReferenceUID=img.frame_of_reference_uid,
        RTReferencedStudySequence=DicomSequence([_item(
            ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT,
            ReferencedSOPInstanceUID=img.study_uid,
            RTReferencedSeriesSequence=DicomSequence([_item(
                SeriesInstanceUID=img.series_uid,
                ContourImageSequence=DicomSequence(image_refs))]))]))])
    ssroi, contours, observations = [], [], []
    multiframe_ref = img.multiframe
    for number, roi in enumerate(rois, start=1):
        ssroi.append(_item(ROINumber=number, ReferencedFrameOfReferenceUID=img.frame_of_reference_uid,
                           ROIName=roi.name, ROIGenerationAlgorithm="MANUAL"))
        item = _item(ROIDisplayColor=list(roi.color), ReferencedROINumber=number)
        if roi.shape is not None:
            shape, zrange = (_SHAPES[roi.shape] if isinstance(roi.shape, str)
                              else (tuple(roi.shape), None))
            zrange = roi.slice_range or zrange
            seq = []
            for i, k in enumerate(img.slice_indices):
                if zrange and not _in_range(k, geo.n_slices, zrange):
                    continue
                ref = _item(ReferencedSOPClassUID=img.sop_class_uid,
                            ReferencedSOPInstanceUID=img.sop_instance_uids[0 if multiframe_ref else i])
                if multiframe_ref:
                    ref.ReferencedFrameNumber = i + 1
                data = _ellipse_contour(geo, np.add(img.positions[i], roi.offset_mm), shape)
                seq.append(_item(ContourImageSequence=DicomSequence([ref]),
                                 ContourGeometricType="CLOSED_PLANAR",
                                 NumberOfContourPoints=len(data) // 3, ContourNumber=len(seq) + 1,
                                 ContourData=data))
            item.ContourSequence = DicomSequence(seq)
        contours.append(item)
        observations.append(_item(ObservationNumber=number, ReferencedROINumber=number,
                                  ROIObservationLabel=roi.name,
                                  RTROIInterpretedType=roi.interpreted_type, ROIInterpreter=""))
    ds.StructureSetROISequence = DicomSequence(ssroi)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    if approval_status:
        _approval(ds, approval_status)
    _finish(ds, sop_uid, implicit_vr, extra, decorate)
    path = _write(ds, _out(out_dir) / f"RS.{sop_uid}.dcm")
    return RTInfo("RTSTRUCT", img.patient, img.study_uid, series_uid, RT_STRUCTURE_SET_STORAGE,
                  sop_uid, path, img.frame_of_reference_uid, [img.series_uid],
                  list(img.sop_instance_uids), label=label, approval_status=approval_status,
                  roi_names=[r.name for r in rois], image_series=img)


def _approval(ds: Dataset, status: str) -> None:
    ds.ApprovalStatus = status
    if status in ("APPROVED", "REJECTED"):
        ds.ReviewDate = STUDY_DATE
        ds.ReviewTime = "143000"
        ds.ReviewerName = "Curie^Marie^^Dr."


def _ptv_centre(geo: Geometry) -> np.ndarray:
    cu, cv, _, _ = _PTV
    c = cu * geo.cols / 2 + (geo.cols - 1) / 2
    r = cv * geo.rows / 2 + (geo.rows - 1) / 2
    return geo.to_patient((geo.n_slices - 1) / 2, r, c)


def write_rtplan(out_dir, structure_set: RTInfo | None = None, approved: bool = True,
                 image_series: SeriesInfo | None = None, label: str | None = None,
                 n_beams: int = 2, n_fractions: int = 30, implicit_vr: bool = False, seed=None,
                 extra: dict | None = None, decorate: Callable[[Dataset], None] | None = None,
                 series_number: int = 3, approval_status: str | None = None) -> RTInfo:
    """Write a static photon plan (``n_beams`` beams, 2 control points each).

    ``approved`` gives APPROVED or UNAPPROVED; ``approval_status`` overrides it (e.g. REJECTED).

    With ``structure_set=None`` give ``image_series``: the plan then has no Referenced Structure
    Set Sequence (RTPlanGeometry TREATMENT_DEVICE) and links to the images only through its frame
    of reference.
    """
    img = structure_set.image_series if structure_set else image_series
    if img is None:
        raise ValueError("write_rtplan needs a structure_set or an image_series")
    status = approval_status or ("APPROVED" if approved else "UNAPPROVED")
    label = label or ("Plan1" if approved else "Plan2")
    key = structure_set.sop_instance_uid if structure_set else img.series_uid
    uid = _uids(seed, f"rtplan-{key}-{label}")
    series_uid, sop_uid = uid(), uid()
    ds = _rt_common("RTPLAN", img.patient, img.study_uid, series_uid, RT_PLAN_STORAGE,
                    series_number, f"Plan {label}")
    ds.FrameOfReferenceUID = img.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = label
    ds.RTPlanName = f"Thorax {label}"
    ds.RTPlanDescription = "Synthetic static photon plan"
    ds.RTPlanDate = STUDY_DATE
    ds.RTPlanTime = "120000"
    if structure_set:
        ds.RTPlanGeometry = "PATIENT"
        ds.ReferencedStructureSetSequence = DicomSequence([_item(
            ReferencedSOPClassUID=RT_STRUCTURE_SET_STORAGE,
            ReferencedSOPInstanceUID=structure_set.sop_instance_uid)])
    else:
        ds.RTPlanGeometry = "TREATMENT_DEVICE"
    iso = [_ds(x, 2) for x in _ptv_centre(img.geometry)]
    ds.PatientSetupSequence = DicomSequence([_item(PatientSetupNumber=1, PatientPosition="HFS",
                                                   SetupTechnique="ISOCENTRIC")])
    ds.ToleranceTableSequence = DicomSequence([_item(ToleranceTableNumber=1,
                                                     ToleranceTableLabel="T1")])
    meterset = 100.0
    ds.FractionGroupSequence = DicomSequence([_item(
        FractionGroupNumber=1, NumberOfFractionsPlanned=n_fractions, NumberOfBeams=n_beams,
        NumberOfBrachyApplicationSetups=0,
        ReferencedBeamSequence=DicomSequence([
            _item(ReferencedBeamNumber=b, BeamMeterset=_ds(meterset), BeamDose=_ds(1.0))
            for b in range(1, n_beams + 1)]))])
    beams = []
    for b in range(1, n_beams + 1):
        angle = (360.0 / n_beams) * (b - 1)
        jaws = [_item(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=["-50", "50"]),
                _item(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=["-50", "50"])]
        cp0 = _item(ControlPointIndex=0, NominalBeamEnergy="6", DoseRateSet="600",
                    BeamLimitingDevicePositionSequence=DicomSequence(jaws),
                    GantryAngle=_ds(angle), GantryRotationDirection="NONE",
                    BeamLimitingDeviceAngle="0", BeamLimitingDeviceRotationDirection="NONE",
                    PatientSupportAngle="0", PatientSupportRotationDirection="NONE",
                    TableTopEccentricAngle="0", TableTopEccentricRotationDirection="NONE",
                    TableTopVerticalPosition="0", TableTopLongitudinalPosition="0",
                    TableTopLateralPosition="0", IsocenterPosition=iso,
                    SourceToSurfaceDistance="900", CumulativeMetersetWeight="0")
        cp1 = _item(ControlPointIndex=1, CumulativeMetersetWeight="1")
        beams.append(_item(
            BeamNumber=b, BeamName=f"G{int(angle)}", BeamDescription=f"Static field {b}",
            BeamType="STATIC", RadiationType="PHOTON", TreatmentMachineName="LINAC1",
            Manufacturer="dicomflow synthetic", PrimaryDosimeterUnit="MU",
            SourceAxisDistance="1000", BeamLimitingDeviceSequence=DicomSequence([
                _item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1),
                _item(RTBeamLimitingDeviceType="ASYMY", NumberOfLeafJawPairs=1)]),
            ReferencedPatientSetupNumber=1, ReferencedToleranceTableNumber=1,
            TreatmentDeliveryType="TREATMENT", NumberOfWedges=0, NumberOfCompensators=0,
            NumberOfBoli=0, NumberOfBlocks=0, FinalCumulativeMetersetWeight="1",
            NumberOfControlPoints=2, ControlPointSequence=DicomSequence([cp0, cp1])))
    ds.BeamSequence = DicomSequence(beams)
    _approval(ds, status)
    _finish(ds, sop_uid, implicit_vr, extra, decorate)
    path = _write(ds, _out(out_dir) / f"RP.{sop_uid}.dcm")
    refs = [structure_set.sop_instance_uid] if structure_set else []
    return RTInfo("RTPLAN", img.patient, img.study_uid, series_uid, RT_PLAN_STORAGE, sop_uid, path,
                  img.frame_of_reference_uid,
                  [structure_set.series_uid] if structure_set else [], refs, label=label,
                  approval_status=status, beam_numbers=list(range(1, n_beams + 1)),
                  image_series=img)


def write_rtdose(out_dir, plan: RTInfo, image_series: SeriesInfo | None = None,
                 grid_spacing: float | None = None, implicit_vr: bool = False, seed=None,
                 extra: dict | None = None, decorate: Callable[[Dataset], None] | None = None,
                 series_number: int = 4, shift_mm: Sequence[float] = (0.0, 0.0, 0.0),
                 summation_type: str = "PLAN") -> RTInfo:
    """Write a small PHYSICAL dose grid in Gy covering the body, peaked on the PTV.

    ``shift_mm`` moves the whole grid (patient coordinates), e.g. so that it no longer covers
    the structures.
    """
    img = image_series or plan.image_series
    geo = img.geometry
    uid = _uids(seed, f"rtdose-{plan.sop_instance_uid}")
    series_uid, sop_uid = uid(), uid()
    ds = _rt_common("RTDOSE", img.patient, img.study_uid, series_uid, RT_DOSE_STORAGE,
                    series_number, f"Dose {plan.label}")
    ds.FrameOfReferenceUID = img.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = "121500"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    # Grid: the body's bounding box in plane (round mm spacing), the whole stack along the
    # normal in at most 16 evenly spaced frames, so the default grid covers every structure.
    cu, cv, au, av = _BODY
    gs_r, gs_c = (grid_spacing, grid_spacing) if grid_spacing else (
        max(geo.pixel_spacing[0], round(geo.rows * geo.pixel_spacing[0] / 24, 1)),
        max(geo.pixel_spacing[1], round(geo.cols * geo.pixel_spacing[1] / 24, 1)))
    step_r, step_c = gs_r / geo.pixel_spacing[0], gs_c / geo.pixel_spacing[1]
    c0 = (cu - au) * geo.cols / 2 + (geo.cols - 1) / 2
    r0 = (cv - av) * geo.rows / 2 + (geo.rows - 1) / 2
    ncols = int(np.ceil(au * geo.cols / step_c)) + 1
    nrows = int(np.ceil(av * geo.rows / step_r)) + 1
    n_frames = min(geo.n_slices, 16)
    frames = list(np.linspace(0, geo.n_slices - 1, n_frames)) if n_frames > 1 else [0.0]
    frame_step = frames[1] - frames[0] if n_frames > 1 else 1.0
    ipp = geo.to_patient(0, r0, c0) + np.asarray(shift_mm, float)
    ds.ImagePositionPatient = _ds_list(ipp)
    ds.ImageOrientationPatient = _ds_list(geo.orientation, 10)
    ds.PixelSpacing = _ds_list((gs_r, gs_c))
    ds.SliceThickness = _ds(frame_step * geo.slice_spacing)
    ds.GridFrameOffsetVector = _ds_list([k * geo.slice_spacing for k in frames])
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = 0x3004000C
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = nrows, ncols
    ds.BitsAllocated = ds.BitsStored = 16  # dciodvfy (3.x) aborts on 32-bit OW pixel data
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation_type
    ds.DoseComment = "Synthetic dose"
    ds.ReferencedRTPlanSequence = DicomSequence([_item(
        ReferencedSOPClassUID=RT_PLAN_STORAGE, ReferencedSOPInstanceUID=plan.sop_instance_uid)])
    # Gaussian dose around the PTV centre, 60 Gy peak, 10 Gy floor inside the grid.
    rr, cc = np.meshgrid(r0 + step_r * np.arange(nrows), c0 + step_c * np.arange(ncols),
                         indexing="ij")
    centre = _ptv_centre(geo)
    dose = np.empty((len(frames), nrows, ncols))
    for i, k in enumerate(frames):
        d2 = ((geo.to_patient(k, rr, cc) + np.asarray(shift_mm, float) - centre) ** 2).sum(-1)
        dose[i] = 10.0 + 50.0 * np.exp(-d2 / (2 * 40.0**2))
    scaling = float(dose.max()) / 65000
    scaling = float(f"{scaling:.6e}")
    ds.DoseGridScaling = f"{scaling:.6e}"
    ds.PixelData = np.rint(dose / scaling).astype("<u2").tobytes()
    _finish(ds, sop_uid, implicit_vr, extra, decorate)
    path = _write(ds, _out(out_dir) / f"RD.{sop_uid}.dcm")
    return RTInfo("RTDOSE", img.patient, img.study_uid, series_uid, RT_DOSE_STORAGE, sop_uid, path,
                  img.frame_of_reference_uid, [plan.series_uid], [plan.sop_instance_uid],
                  label=plan.label, image_series=img)


def write_rtimage(out_dir, plan: RTInfo, beam_number: int = 1, size: int = 64,
                  implicit_vr: bool = False, seed=None, extra: dict | None = None,
                  decorate: Callable[[Dataset], None] | None = None,
                  series_number: int = 5) -> RTInfo:
    """Write a small DRR-like RT image of one beam of ``plan``."""
    img = plan.image_series
    uid = _uids(seed, f"rtimage-{plan.sop_instance_uid}-{beam_number}")
    series_uid, sop_uid = uid(), uid()
    ds = _rt_common("RTIMAGE", plan.patient, plan.study_uid, series_uid, RT_IMAGE_STORAGE,
                    series_number, f"DRR beam {beam_number}")
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = "122000"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RTImageLabel = f"DRR {plan.label} B{beam_number}"
    ds.RTImageName = f"DRR beam {beam_number}"
    ds.ImageType = ["DERIVED", "SECONDARY", "DRR"]
    ds.ConversionType = "WSD"
    ds.RTImagePlane = "NORMAL"
    ds.XRayImageReceptorAngle = "0"
    ds.ImagePlanePixelSpacing = ["1", "1"]
    ds.RTImagePosition = [_ds(-(size - 1) / 2), _ds((size - 1) / 2)]
    ds.RadiationMachineName = "LINAC1"
    ds.PrimaryDosimeterUnit = "MU"
    ds.RadiationMachineSAD = "1000"
    ds.RTImageSID = "1500"
    ds.ReferencedRTPlanSequence = DicomSequence([_item(
        ReferencedSOPClassUID=RT_PLAN_STORAGE, ReferencedSOPInstanceUID=plan.sop_instance_uid)])
    ds.ReferencedBeamNumber = beam_number
    ds.GantryAngle = "0"
    ds.BeamLimitingDeviceAngle = "0"
    ds.PatientSupportAngle = "0"
    body = _ellipse_mask(size, size, (0.0, 0.0, 0.8, 0.95))
    lungs = _ellipse_mask(size, size, _LUNG_L[:2] + (0.2, 0.5)) | _ellipse_mask(
        size, size, _LUNG_R[:2] + (0.2, 0.5))
    pixels = np.full((size, size), 200, np.uint16)
    pixels[body] = 3000
    pixels[lungs] = 1200
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.WindowCenter, ds.WindowWidth = "1600", "3200"
    if img is not None:
        ds.FrameOfReferenceUID = img.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    _finish(ds, sop_uid, implicit_vr, extra, decorate)
    path = _write(ds, _out(out_dir) / f"RI.{sop_uid}.dcm")
    return RTInfo("RTIMAGE", plan.patient, plan.study_uid, series_uid, RT_IMAGE_STORAGE, sop_uid,
                  path, plan.frame_of_reference_uid, [plan.series_uid], [plan.sop_instance_uid],
                  label=ds.RTImageLabel, beam_numbers=[beam_number], image_series=img)


def write_registration(out_dir, fixed: SeriesInfo, moving: SeriesInfo,
                       matrix: Sequence[float] | None = None, implicit_vr: bool = False,
                       seed=None, extra: dict | None = None,
                       decorate: Callable[[Dataset], None] | None = None,
                       series_number: int = 40) -> RTInfo:
    """Write a rigid Spatial Registration (REG) linking ``moving``'s frame of reference to
    ``fixed``'s (4x4 row-major ``matrix``; default a 10 mm shift), in ``fixed``'s study."""
    uid = _uids(seed, f"reg-{fixed.series_uid}-{moving.series_uid}")
    series_uid, sop_uid = uid(), uid()
    m = list(matrix) if matrix is not None else [1, 0, 0, 10, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    if len(m) != 16:
        raise ValueError("matrix needs 16 numbers (4x4, row-major)")
    ds = _rt_common("REG", fixed.patient, fixed.study_uid, series_uid, SPATIAL_REGISTRATION_STORAGE,
                    series_number, "Rigid registration")
    ds.Laterality = ""  # General Series 2C: dciodvfy wants it present in REG
    ds.FrameOfReferenceUID = fixed.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate, ds.ContentTime = STUDY_DATE, "123000"
    ds.InstanceNumber = 1
    ds.ContentLabel = "REG1"
    ds.ContentDescription = "CT to MR rigid registration"
    ds.ContentCreatorName = "Planner^Paul"

    def reg_item(series: SeriesInfo, values) -> Dataset:
        return _item(
            FrameOfReferenceUID=series.frame_of_reference_uid,
            ReferencedImageSequence=DicomSequence([
                _item(ReferencedSOPClassUID=series.sop_class_uid, ReferencedSOPInstanceUID=s)
                for s in series.sop_instance_uids]),
            MatrixRegistrationSequence=DicomSequence([_item(
                RegistrationTypeCodeSequence=DicomSequence(),
                MatrixSequence=DicomSequence([_item(
                    FrameOfReferenceTransformationMatrix=_ds_list(values, 6),
                    FrameOfReferenceTransformationMatrixType="RIGID")]))]))

    identity = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    ds.RegistrationSequence = DicomSequence([reg_item(fixed, identity), reg_item(moving, m)])

    def series_ref(series: SeriesInfo) -> Dataset:
        return _item(SeriesInstanceUID=series.series_uid, ReferencedInstanceSequence=DicomSequence([
            _item(ReferencedSOPClassUID=series.sop_class_uid, ReferencedSOPInstanceUID=s)
            for s in series.sop_instance_uids]))

    ds.ReferencedSeriesSequence = DicomSequence([series_ref(fixed)] + (
        [series_ref(moving)] if moving.study_uid == fixed.study_uid else []))
    if moving.study_uid != fixed.study_uid:
        ds.StudiesContainingOtherReferencedInstancesSequence = DicomSequence([_item(
            StudyInstanceUID=moving.study_uid,
            ReferencedSeriesSequence=DicomSequence([series_ref(moving)]))])
    _finish(ds, sop_uid, implicit_vr, extra, decorate)
    path = _write(ds, _out(out_dir) / f"REG.{sop_uid}.dcm")
    return RTInfo("REG", fixed.patient, fixed.study_uid, series_uid, SPATIAL_REGISTRATION_STORAGE,
                  sop_uid, path, fixed.frame_of_reference_uid,
                  [fixed.series_uid, moving.series_uid],
                  [*fixed.sop_instance_uids, *moving.sop_instance_uids], label="REG1",
                  image_series=fixed)


# --------------------------------------------------------------------------------------------
# Whole studies and archives
def write_rt_study(out_dir, patient: PatientSpec | None = None, n_slices: int = 12,
                   rows: int = 64, cols: int = 64, with_mr: bool = True,
                   absent_ct_structure_set: bool = False, plan_without_structure_set: bool = False,
                   skip_slices: Iterable[int] = (), orientation: Sequence[float] = AXIAL,
                   implicit_vr: bool = False, seed=None, extra: dict | None = None,
                   decorate: Callable[[Dataset], None] | None = None,
                   subfolders: bool = True, with_registration: bool = False,
                   structure_set_approval: str | None = None) -> StudyInfo:
    """Write a planning study: CT, RTSTRUCT, an APPROVED and an UNAPPROVED plan, a dose for
    each, an RT image on the approved plan and (``with_mr``) an unrelated MR in its own study.

    ``absent_ct_structure_set`` adds a second structure set whose CT is not written;
    ``plan_without_structure_set`` adds a third (approved) plan that references no structure set;
    ``with_registration`` (needs ``with_mr``) adds a REG linking the MR to the CT;
    ``structure_set_approval`` (e.g. "APPROVED") gives the structure set an Approval module.
    With ``subfolders`` each series goes to ``out_dir/<MODALITY>_<n>/``.
    """
    patient = patient or PatientSpec()
    out = _out(out_dir)
    uid = _uids(seed, "study")
    study_uid = uid()
    common = dict(implicit_vr=implicit_vr, extra=extra, decorate=decorate)
    sub = (lambda name: out / name) if subfolders else (lambda name: out)
    ct = write_image_series(sub("CT"), patient, "CT", n_slices, rows, cols, study_uid=study_uid,
                            orientation=orientation, skip_slices=skip_slices,
                            seed=_child(seed, "ct"), series_number=1, **common)
    rs = write_rtstruct(sub("RTSTRUCT"), ct, seed=_child(seed, "rs"), series_number=2,
                        approval_status=structure_set_approval, **common)
    plans = [write_rtplan(sub("RTPLAN_1"), rs, approved=True, label="Plan1",
                          seed=_child(seed, "p1"), series_number=3, **common),
             write_rtplan(sub("RTPLAN_2"), rs, approved=False, label="Plan2",
                          seed=_child(seed, "p2"), series_number=4, **common)]
    if plan_without_structure_set:
        plans.append(write_rtplan(sub("RTPLAN_3"), None, approved=True, image_series=ct,
                                  label="Plan3", seed=_child(seed, "p3"), series_number=5, **common))
    doses = [write_rtdose(sub(f"RTDOSE_{i + 1}"), p, ct, seed=_child(seed, f"d{i}"),
                          series_number=10 + i, **common) for i, p in enumerate(plans)]
    rtimage = write_rtimage(sub("RTIMAGE"), plans[0], seed=_child(seed, "ri"), series_number=20,
                            **common)
    info = StudyInfo(patient, study_uid, ct, rs, plans, doses, rtimage, out_dir=out)
    if with_mr:
        info.mr = write_image_series(sub("MR"), patient, "MR", max(4, n_slices // 2), rows, cols,
                                     seed=_child(seed, "mr"), series_number=1,
                                     study_description="MR brain", **common)
    if with_registration and info.mr is not None:
        info.registration = write_registration(sub("REG"), ct, info.mr, seed=_child(seed, "reg"),
                                               **common)
    if absent_ct_structure_set:
        info.absent_ct = write_image_series(None, patient, "CT", n_slices, rows, cols,
                                            study_uid=study_uid, seed=_child(seed, "absent"),
                                            series_number=30)
        info.orphan_rtstruct = write_rtstruct(sub("RTSTRUCT_ORPHAN"), info.absent_ct,
                                              label="RS_absentCT", seed=_child(seed, "rs2"),
                                              series_number=31, **common)
    return info


def _child(seed, name: str):
    """A distinct deterministic seed per part (None stays None: fresh UIDs)."""
    return None if seed is None else f"{seed}/{name}"


def write_secondary_capture(out_dir, patient: PatientSpec | None = None,
                            study_uid: str | None = None, burned_in: bool = True, size: int = 64,
                            implicit_vr: bool = False, seed=None, extra: dict | None = None,
                            decorate: Callable[[Dataset], None] | None = None,
                            series_number: int = 50) -> SeriesInfo:
    """Write a Secondary Capture screenshot (``BurnedInAnnotation`` YES by default, with a bright
    text-like band in the pixels): the kind of image de-identification must quarantine."""
    patient = patient or PatientSpec()
    uid = _uids(seed, f"sc-{series_number}")
    study_uid = study_uid or uid()
    series_uid, sop_uid = uid(), uid()
    ds = Dataset()
    _common(ds, patient, study_uid, "OT", series_uid, series_number,
            SECONDARY_CAPTURE_IMAGE_STORAGE)
    ds.SeriesDescription = "Screenshot"
    ds.Laterality = ""  # General Series 2C: dciodvfy wants it present here
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = STUDY_DATE, "124500"
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pixels = np.zeros((size, size), np.uint8)
    pixels[_ellipse_mask(size, size, _BODY)] = 120
    if burned_in:  # a band of "characters" along the top, like an overlay of the patient's name
        pixels[2:8, 2:size - 2:3] = 255
    ds.PixelData = pixels.tobytes()
    _finish(ds, sop_uid, implicit_vr, extra, decorate)
    path = _write(ds, _out(out_dir) / f"SC.{sop_uid}.dcm")
    geo = make_geometry(1, size, size)
    return SeriesInfo(patient, "OT", study_uid, series_uid, "", SECONDARY_CAPTURE_IMAGE_STORAGE,
                      [sop_uid], [path], [], geo, [0],
                      transfer_syntax_uid=ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian)


def write_dicomdir(out_dir, files: Iterable[os.PathLike | str]) -> Path:
    """Write a media folder (``DICOMDIR`` + ``PT*/ST*/SE*/IM*`` copies of ``files``) as CDs and
    PACS exports have it; returns the DICOMDIR's path."""
    from pydicom.fileset import FileSet

    fs = FileSet()
    for f in files:
        fs.add(f)
    out = _out(out_dir)
    fs.write(out)
    return out / "DICOMDIR"


def write_zip(zip_path, files: Sequence[os.PathLike | str], arcnames: Sequence[str] | None = None,
              compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Write ``files`` into a ZIP (member names: ``arcnames`` or the bare file names)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    names = list(arcnames) if arcnames is not None else [Path(f).name for f in files]
    if len(names) != len(files):
        raise ValueError("arcnames must have one name per file")
    with zipfile.ZipFile(zip_path, "w", compression=compression, compresslevel=1) as zf:
        for f, name in zip(files, names):
            zf.write(f, name)
    return zip_path


@dataclass
class ZipInfo:
    """A multi-patient ZIP: its members and, per patient, what was written."""

    path: Path
    patients: list[PatientSpec]
    series: list[SeriesInfo | StudyInfo]
    members: list[str]

    @property
    def n_files(self) -> int:
        return len(self.members)


def write_multi_patient_zip(zip_path, n_patients: int = 3, n_slices: int = 5, rows: int = 32,
                            cols: int = 32, rt: bool = False, seed=None, extra: dict | None = None,
                            decorate: Callable[[Dataset], None] | None = None,
                            compression: int = zipfile.ZIP_DEFLATED,
                            patients: Sequence[PatientSpec] | None = None) -> ZipInfo:
    """Write a ZIP holding ``n_patients`` patients, members ``<folder>/<series folder>/<file>``
    (folder: the PatientID with characters other than letters, digits, "-" and "_" replaced).

    Each patient gets a CT (``rt=False``) or a whole RT study without MR (``rt=True``).
    ``patients`` overrides the random ones (then ``n_patients`` is ignored).
    """
    rng = random.Random(seed)
    patients = list(patients) if patients else [PatientSpec.random(rng, i)
                                                for i in range(n_patients)]
    written: list[SeriesInfo | StudyInfo] = []
    files, names = [], []
    with tempfile.TemporaryDirectory(prefix="dicomflow-synth-") as tmp:
        for i, patient in enumerate(patients):
            pdir = Path(tmp) / _safe_folder(patient.patient_id)
            child = _child(seed, f"patient{i}")
            if rt:
                info = write_rt_study(pdir, patient, n_slices, rows, cols, with_mr=False,
                                      seed=child, extra=extra, decorate=decorate)
            else:
                info = write_image_series(pdir / "CT_1", patient, "CT", n_slices, rows, cols,
                                          seed=child, extra=extra, decorate=decorate)
            written.append(info)
            for path in info.paths:
                files.append(path)
                names.append(path.relative_to(tmp).as_posix())
        write_zip(zip_path, files, names, compression)
        for info in written:  # the temp files are gone: keep member names, drop paths
            _relocate(info, Path(tmp))
    return ZipInfo(Path(zip_path), patients, written, names)


def _safe_folder(text: str) -> str:
    """A folder name from an identifier: letters, digits, '-' and '_' only."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "_"


def _relocate(info, tmp: Path) -> None:
    """Turn paths into ZIP member-relative paths once the temp folder is removed."""
    if isinstance(info, SeriesInfo):
        info.paths = [Path(p.relative_to(tmp).as_posix()) for p in info.paths]
        return
    for series in (info.ct, info.mr, info.absent_ct):
        if series is not None:
            _relocate(series, tmp)
    for obj in info.rt_objects:
        if obj.path is not None:
            obj.path = Path(obj.path.relative_to(tmp).as_posix())
    info.out_dir = None


__all__ = [
    "AXIAL", "CORONAL", "SAGITTAL", "DEFAULT_ROIS", "Geometry", "PatientSpec", "PhantomMasks",
    "ROISpec", "RTInfo", "SeriesInfo", "StudyInfo", "UIDGenerator", "ZipInfo", "make_geometry",
    "oblique_orientation", "phantom_masks", "write_image_series", "write_multi_patient_zip",
    "write_dicomdir", "write_registration", "write_secondary_capture", "write_rt_study", "write_rtdose", "write_rtimage", "write_rtplan", "write_rtstruct",
    "write_zip",
]
