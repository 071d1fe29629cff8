"""Reads of the catalog's stored analysis: RT tree, selection closure, check results, approval, sanity.

Everything here reads what ``dicomflow.catalog.analysis`` stored; nothing re-reads files. The
documents have the same shape as the folder commands' (``dicomflow rt tree`` / ``dicomflow check``),
so callers (API, UI, processing) can use either source.
"""

from __future__ import annotations

from collections import defaultdict


from dicomflow.catalog.models import (
    CheckFinding,
    Patient,
    SanityResult,
    Series,
    SeriesCheck,
    SeriesReference,
    Study,
)
from dicomflow.errors import InputError

_ORDER = {"CT": 0, "MR": 0, "PT": 0, "RTSTRUCT": 1, "RTPLAN": 2, "RTDOSE": 3, "RTIMAGE": 3}
RT_APPROVAL_MODALITIES = ("RTPLAN", "RTSTRUCT")


def get_study(study_uid: str) -> Study:
    try:
        return Study.objects.select_related("patient").get(study_instance_uid=study_uid)
    except Study.DoesNotExist:
        raise InputError("no study with this Study Instance UID in the catalog; import it first") from None


def get_series(series_uid: str) -> Series:
    try:
        return Series.objects.select_related("study").get(series_instance_uid=series_uid)
    except Series.DoesNotExist:
        raise InputError("no series with this Series Instance UID in the catalog; import it first") from None


def is_analysed(study: Study) -> bool:
    return SeriesCheck.objects.filter(study=study).exists()


def analysis_state(study: Study) -> dict:
    """When the study was analysed and whether instances arrived since (``stale``: results may lag)."""
    from django.db.models import Max, Min

    from dicomflow.catalog.models import Instance

    checked = SeriesCheck.objects.filter(study=study).aggregate(at=Min("checked_at"))["at"]
    received = Instance.objects.filter(series__study=study).aggregate(at=Max("received_at"))["at"]
    return {
        "analysed_at": checked.isoformat() if checked else None,
        "stale": checked is None or (received is not None and received > checked),
    }


def study_tree(study: Study) -> dict:
    """The stored RT tree of one study: ``{"series": [...]}`` like ``RTGraph.tree()``.

    One query for the series (with their stored check row) and ONE query for every edge that
    starts or ends in the study. Series not analysed yet are listed with ``"analysed": false``.
    """
    # A UNION of two indexed lookups, not "study = X OR target.study = X": the OR across the join
    # made PostgreSQL scan every edge of the catalog (130 ms at a million instances; now < 1 ms).
    edges = SeriesReference.objects.values_list(
        "source__series_instance_uid", "target__series_instance_uid", "target_uid", "via", "missing"
    )
    edges = list(edges.filter(study=study).order_by().union(edges.filter(target__study=study).order_by()))
    references, referenced_by = defaultdict(set), defaultdict(set)
    missing, missing_frames = defaultdict(set), defaultdict(set)
    for source, target, target_uid, via, is_missing in edges:
        if not is_missing:
            references[source].add(target)
            referenced_by[target].add(source)
        elif via == "frame_of_reference":
            missing_frames[source].add(target_uid)
        else:
            missing[source].add(target_uid)
    rows = list(
        Series.objects.filter(study=study).values(
            "series_instance_uid", "modality", "check_result__id", "check_result__approval_status", "check_result__instances"
        )
    )
    rows.sort(key=lambda r: (_ORDER.get(r["modality"], 0), r["series_instance_uid"]))
    series = []
    for r in rows:
        uid = r["series_instance_uid"]
        series.append(
            {
                "uid": uid,
                "modality": r["modality"],
                "references": sorted(references[uid]),
                "missing_references": sorted(missing[uid]),
                "approval_status": r["check_result__approval_status"] or None,
                "study_uid": study.study_instance_uid,
                "instances": r["check_result__instances"] or 0,
                "referenced_by": sorted(referenced_by[uid]),
                "missing_frames_of_reference": sorted(missing_frames[uid]),
                "analysed": r["check_result__id"] is not None,
            }
        )
    return {"series": series}


def selection_closure(*series_uids: str) -> list[str]:
    """The given series and all they reference, transitively, from the stored edges.

    Same order as ``RTGraph.closure``: requested series first, then depth first by UID. Unknown
    UIDs raise ``InputError``. Edges of the patients concerned are read in one query.
    """
    known = dict(
        Series.objects.filter(series_instance_uid__in=series_uids).values_list("series_instance_uid", "study__patient_id")
    )
    unknown = [u for u in series_uids if u not in known]
    if unknown:
        raise InputError(f"{len(unknown)} requested series UID(s) are not in the catalog")
    outgoing: dict[str, set[str]] = defaultdict(set)
    for source, target in SeriesReference.objects.filter(
        study__patient_id__in=set(known.values()), missing=False
    ).values_list("source__series_instance_uid", "target__series_instance_uid"):
        outgoing[source].add(target)
    seen: dict[str, None] = {}
    stack = list(reversed(series_uids))
    while stack:
        uid = stack.pop()
        if uid in seen:
            continue
        seen[uid] = None
        stack.extend(sorted(outgoing[uid] - seen.keys(), reverse=True))
    return list(seen)


def orphan_series(patient: Patient) -> list[str]:
    """Analysed series of a patient linked to nothing present (like ``RTGraph.orphans``)."""
    linked = set()
    for source, target in SeriesReference.objects.filter(study__patient=patient, missing=False).values_list(
        "source__series_instance_uid", "target__series_instance_uid"
    ):
        linked.update((source, target))
    analysed = SeriesCheck.objects.filter(study__patient=patient).values_list("series__series_instance_uid", flat=True)
    return sorted(uid for uid in analysed if uid not in linked)


def series_checks(series: Series) -> dict | None:
    """The stored check result of a series shaped like one ``dicomflow check`` entry, or None if not analysed."""
    check = SeriesCheck.objects.filter(series=series).first()
    if check is None:
        return None
    findings = CheckFinding.objects.filter(series_check=check).values("severity", "code", "message")
    return {
        "uid": series.series_instance_uid,
        "modality": check.modality,
        "complete": check.complete,
        "missing_slices": list(check.missing_slices),
        "findings": [dict(f) for f in findings],
        "study_uid": series.study.study_instance_uid,
        "instances": check.instances,
        "checked_at": check.checked_at.isoformat(),
    }


def study_checks(study: Study) -> list[dict]:
    """Stored check results of every analysed series of a study (two queries)."""
    checks = list(SeriesCheck.objects.filter(study=study).select_related("series"))
    by_check = defaultdict(list)
    for f in CheckFinding.objects.filter(series_check__study=study).values("series_check_id", "severity", "code", "message"):
        by_check[f.pop("series_check_id")].append(f)
    out = [
        {
            "uid": c.series.series_instance_uid,
            "modality": c.modality,
            "complete": c.complete,
            "missing_slices": list(c.missing_slices),
            "findings": by_check[c.id],
            "study_uid": study.study_instance_uid,
            "instances": c.instances,
            "checked_at": c.checked_at.isoformat(),
        }
        for c in checks
    ]
    return sorted(out, key=lambda d: (_ORDER.get(d["modality"], 0), d["uid"]))


def approval_statuses(study: Study, *, include_review: bool = False) -> list[dict]:
    """Approval of the study's plans and structure sets (least trusted status among instances).

    Review date, time and reviewer name are included only when ``include_review`` is True: the
    caller decides whether the user may see who approved a plan and when.
    """
    out = []
    for c in SeriesCheck.objects.filter(study=study, modality__in=RT_APPROVAL_MODALITIES).select_related("series"):
        entry = {"uid": c.series.series_instance_uid, "modality": c.modality, "approval_status": c.approval_status or None}
        if include_review:
            entry |= {
                "review_date": c.review_date or None,
                "review_time": c.review_time or None,
                "reviewer_name": c.reviewer_name or None,
            }
        out.append(entry)
    return sorted(out, key=lambda d: (_ORDER.get(d["modality"], 0), d["uid"]))


def effective_sanity_status(result: SanityResult) -> str:
    """The latest override's status, else the computed one (the computed result is never changed)."""
    override = result.overrides.order_by("-created_at", "-id").first()
    return override.status if override else result.status


def sanity_results(*, study: Study | None = None, patient: Patient | None = None) -> list[dict]:
    """Stored sanity results (newest first) with their overrides (who, when, reason)."""
    qs = SanityResult.objects.all().prefetch_related("overrides")
    if study is not None:
        qs = qs.filter(study=study)
    if patient is not None:
        qs = qs.filter(patient=patient)
    out = []
    for r in qs:
        overrides = sorted(r.overrides.all(), key=lambda o: (o.created_at, o.id), reverse=True)
        out.append(
            {
                "id": r.id,
                "level": "study" if r.study_id else "patient",
                "status": r.status,
                "effective_status": overrides[0].status if overrides else r.status,
                "expected_source": r.expected_source,
                "compared": r.compared,
                "findings": r.findings,
                "checked_at": r.checked_at.isoformat(),
                "overrides": [
                    {"status": o.status, "reason": o.reason, "user": o.username, "at": o.created_at.isoformat()}
                    for o in overrides
                ],
            }
        )
    return out
