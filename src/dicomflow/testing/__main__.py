"""Command line for the synthetic data generator; prints one JSON summary on stdout.

    python -m dicomflow.testing ct OUT_DIR --slices 1000 --size 512      # benchmark CT (~500 MB)
    python -m dicomflow.testing rt-study OUT_DIR [--orphan] [--plan-without-structure-set]
    python -m dicomflow.testing zip OUT.zip --patients N [--rt]
    python -m dicomflow.testing hostile OUT_DIR        # issue 13's hostile de-identification corpus

Distinct patients: ``ct`` and ``rt-study`` take ``--patient-id ID`` (name, sex and birth date are
then drawn from the seed and the ID; ``--patient-name`` overrides the name) and ``--seed N``: the
same ID and seed write the same UIDs and values again, another seed or ID different ones, so two
patients written with the same seed never collide. Without ``--patient-id`` the patient is the
default one (PAT0001); without ``--seed`` every UID is fresh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from dicomflow.testing import synth


def _series_summary(info: synth.SeriesInfo) -> dict:
    return {
        "modality": info.modality, "study_uid": info.study_uid, "series_uid": info.series_uid,
        "frame_of_reference_uid": info.frame_of_reference_uid,
        "sop_class_uid": info.sop_class_uid, "files": len(info.paths),
        "instances": len(info.sop_instance_uids),
        "skipped_locations": info.skipped_locations,
    }


def _rt_summary(obj: synth.RTInfo) -> dict:
    return {"modality": obj.modality, "series_uid": obj.series_uid,
            "sop_instance_uid": obj.sop_instance_uid, "path": str(obj.path) if obj.path else None,
            "references": obj.referenced_sop_instance_uids, "label": obj.label,
            "approval_status": obj.approval_status}


def _study_summary(info: synth.StudyInfo) -> dict:
    return {
        "patient_id": info.patient.patient_id, "study_uid": info.study_uid,
        "ct": _series_summary(info.ct), "mr": _series_summary(info.mr) if info.mr else None,
        "rt": [_rt_summary(o) for o in info.rt_objects],
        "absent_ct_series_uid": info.absent_ct.series_uid if info.absent_ct else None,
        "files": len(info.paths),
    }


def _orientation(text: str | None) -> tuple[float, ...]:
    if not text:
        return synth.AXIAL
    named = {"axial": synth.AXIAL, "coronal": synth.CORONAL, "sagittal": synth.SAGITTAL}
    if text.lower() in named:
        return named[text.lower()]
    if text.lower().startswith("oblique"):
        _, _, deg = text.partition(":")
        return synth.oblique_orientation(float(deg or 20))
    values = tuple(float(x) for x in text.replace("\\", ",").split(","))
    if len(values) != 6:
        raise argparse.ArgumentTypeError("orientation needs 6 numbers, or axial/coronal/"
                                          "sagittal/oblique[:DEG]")
    return values


def _patient(args) -> tuple[synth.PatientSpec, object]:
    """The patient ``--patient-id``/``--patient-name`` ask for, and the seed to write it with."""
    patient = synth.PatientSpec.for_id(args.patient_id, args.seed) if args.patient_id else synth.PatientSpec()
    if args.patient_name:
        patient = synth.PatientSpec(patient.patient_id, args.patient_name, patient.sex, patient.birth_date)
    return patient, synth.patient_seed(args.seed, args.patient_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicomflow.testing",
                                     description="Write synthetic DICOM test data.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--seed", type=int, default=None, help="reproducible UIDs and values")
        p.add_argument("--implicit", action="store_true", help="Implicit VR Little Endian")
        p.add_argument("--slices", type=int, default=None)
        p.add_argument("--size", type=int, default=None, help="rows = columns")

    def patient_options(p):
        p.add_argument("--patient-id", default=None,
                       help="write this patient (other values drawn from --seed and the ID; UIDs differ per ID)")
        p.add_argument("--patient-name", default=None, help="DICOM PN, e.g. Doe^Jane")

    ct = sub.add_parser("ct", help="an image series (CT by default)")
    ct.add_argument("out_dir")
    common(ct)
    ct.add_argument("--modality", default="CT", choices=["CT", "MR", "ct", "mr"])
    ct.add_argument("--thickness", type=float, default=2.5)
    ct.add_argument("--orientation", default=None, help="axial|coronal|sagittal|oblique[:DEG]|6 numbers")
    ct.add_argument("--skip", type=int, nargs="*", default=(), help="slice indices to leave out")
    ct.add_argument("--noise", type=float, default=5.0)
    ct.add_argument("--multiframe", action="store_true")
    patient_options(ct)

    rt = sub.add_parser("rt-study", help="CT + RTSTRUCT + 2 plans + doses + RT image (+ MR)")
    rt.add_argument("out_dir")
    common(rt)
    rt.add_argument("--no-mr", action="store_true")
    rt.add_argument("--orphan", action="store_true", help="add a structure set whose CT is absent")
    rt.add_argument("--plan-without-structure-set", action="store_true")
    rt.add_argument("--registration", action="store_true", help="add a REG linking MR to CT")
    patient_options(rt)

    zp = sub.add_parser("zip", help="a multi-patient ZIP")
    zp.add_argument("zip_path")
    common(zp)
    zp.add_argument("--patients", type=int, default=3)
    zp.add_argument("--rt", action="store_true", help="whole RT studies instead of CTs")

    hc = sub.add_parser("hostile", help="hostile de-identification corpus (markers in every risky place)")
    hc.add_argument("out_dir")
    hc.add_argument("--seed", type=int, default=13)

    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.command == "ct":
        patient, seed = _patient(args)
        size = args.size or 64
        info = synth.write_image_series(
            args.out_dir, patient, args.modality.upper(), args.slices or 20, size, size,
            slice_thickness=args.thickness, orientation=_orientation(args.orientation),
            skip_slices=args.skip, multiframe=args.multiframe, noise=args.noise,
            implicit_vr=args.implicit, seed=seed)
        summary = {"patient_id": patient.patient_id, **_series_summary(info)}
        summary["bytes"] = sum(p.stat().st_size for p in info.paths)
    elif args.command == "rt-study":
        patient, seed = _patient(args)
        size = args.size or 64
        info = synth.write_rt_study(
            args.out_dir, patient, n_slices=args.slices or 12, rows=size, cols=size,
            with_mr=not args.no_mr, absent_ct_structure_set=args.orphan,
            plan_without_structure_set=args.plan_without_structure_set,
            with_registration=args.registration,
            implicit_vr=args.implicit, seed=seed)
        summary = _study_summary(info)
    elif args.command == "hostile":
        from dicomflow.testing import hostile

        corpus = hostile.write_hostile_corpus(args.out_dir, seed=args.seed)
        summary = {"files": len(corpus.files), "markers": sorted(corpus.markers),
                   "truncated": str(corpus.truncated), "dicomdir": str(corpus.dicomdir),
                   "no_patient_id": str(corpus.no_patient_id),
                   "conflicting": [str(p) for p in corpus.conflicting],
                   "shared_id": {name: [str(p) for p in paths] for name, paths in corpus.shared_id.items()}}
    else:
        size = args.size or 32
        zinfo = synth.write_multi_patient_zip(args.zip_path, args.patients, args.slices or 5,
                                              size, size, rt=args.rt, seed=args.seed)
        summary = {"zip": str(zinfo.path), "patients": [p.patient_id for p in zinfo.patients],
                   "members": len(zinfo.members)}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
