#!/usr/bin/env python3
"""Catalog benchmark: a million-instance PostgreSQL catalog, p50/p95 of the API and the pages.

    PG_URL=postgres://postgres@127.0.0.1:5432/postgres python benchmarks/catalog_bench.py [--instances N]

1. Creates the database ``--database`` (default ``dicomflow_catalog_bench``) on the server of
   ``PG_URL`` (dropped at the end unless ``--keep``) and migrates it.
2. Fills it in bulk with ``COPY`` (no files are imported): about ``instances / 500`` patients, each
   with studies of one CT (100-300 slices, with image information) plus RTSTRUCT (10 ROIs), RTPLAN
   and RTDOSE, their RT reference edges and check rows, a processing state per series and jobs
   for a fifth of the CT series; a tenth of the patients are de-identified copies in 4 research projects.
3. Serves the app with gunicorn (``_bench_wsgi``: the real app, with query counts in a header) and
   measures through real HTTP, as an administrator and as a non-staff project member (a data
   manager of one project, without sight of the clinical pool): patient search by ID prefix and by
   name (API and page), the series list of the processing page filtered by status and unfiltered,
   a study's RT tree (API and page), the jobs list (API and page), the lookup autocomplete.
4. Prints p50/p95 and the queries per request; writes ``EXPLAIN (ANALYZE, BUFFERS)`` of the
   slowest request's slowest statement; ``--json`` writes everything as one document.

The target: every p95 < 150 ms, a constant number of queries per request (no N+1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_MS = 150.0
CT = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RTPLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RTDOSE = "1.2.840.10008.5.1.4.1.1.481.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
LAST = ["SMITH", "JOHNSON", "PEETERS", "JANSSENS", "MAES", "MARTIN", "DUBOIS", "MÜLLER", "SCHMIDT", "ROSSI",
        "GARCIA", "NGUYEN", "WILLEMS", "CLAES", "GOOSSENS", "WOUTERS", "DE SMET", "JACOBS", "MERTENS", "LAMBERT"]
FIRST = ["ANNA", "JAN", "MARIE", "PIETER", "SOPHIE", "LUC", "EMMA", "TOM", "LIES", "KOEN", "ELS", "BART",
         "NORA", "WIM", "SARA", "DIRK", "LAURA", "MARC", "INGE", "PAUL"]
ROIS = ["BODY", "PTV", "CTV", "GTV", "HEART", "LUNG_L", "LUNG_R", "SPINALCORD", "ESOPHAGUS", "LIVER"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- database ------------------------------------------------------------------------------------------
def create_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Copier:
    """COPY rows into a model's table; columns not given take the field's default."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.counts: dict[str, int] = {}

    def __call__(self, model, columns: list[str], rows) -> int:
        from django.db.models.fields.json import JSONField
        from psycopg.types.json import Jsonb

        now = datetime.now(timezone.utc)
        given = set(columns)
        extra, extra_values = [], []
        for field in model._meta.concrete_fields:
            if field.column in given or field.attname in given or field.primary_key:
                continue
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                value = now
            elif field.has_default():
                value = field.get_default()
            elif field.null:
                value = None
            else:
                raise ValueError(f"{model.__name__}.{field.name}: no value and no default")
            if isinstance(field, JSONField) and value is not None:
                value = Jsonb(value)
            extra.append(field.column)
            extra_values.append(value)
        table = model._meta.db_table
        names = ", ".join(f'"{c}"' for c in list(columns) + extra)
        tail = tuple(extra_values)
        n = 0
        with self.cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(tuple(row) + tail)
                n += 1
        self.counts[table] = self.counts.get(table, 0) + n
        return n


def fill(instances: int, patients: int, seed: int) -> dict:
    """The catalog in bulk (ids given here, sequences moved past them afterwards)."""
    from django.db import connection, transaction
    from psycopg.types.json import Jsonb

    from dicomflow.catalog.models import (
        ROI,
        ImageInformation,
        Instance,
        Patient,
        RTDose,
        RTPlan,
        RTStructureSet,
        Series,
        SeriesCheck,
        SeriesReference,
        Study,
    )
    from dicomflow.processing.models import SERIES_STATUS_CHOICES, Job, SeriesState, Template
    from dicomflow.projects.models import Project

    rnd = random.Random(seed)
    projects = [Project.objects.create(key=f"bench{k}", name=f"Benchmark project {k}") for k in range(1, 5)]
    template = Template.objects.create(name="bench-template", definition={"processor": "noop"})
    series_statuses = [v for v, _ in SERIES_STATUS_CHOICES]
    job_statuses = ["pending", "running", "waiting", "finished", "finished", "finished", "failed", "cancelled"]
    root = "1.2.826.0.1.3680043.10.1234"
    now = datetime.now(timezone.utc)

    # Patients: 90 % clinical (hospital numbers), 10 % de-identified copies in the 4 projects.
    pat_rows, pat_project = [], []
    for p in range(1, patients + 1):
        project = projects[(p // 10) % 4] if p % 10 == 0 else None
        pid = f"{project.key.upper()}-{p:06d}" if project else f"{10000000 + p * 37:08d}"
        name = "" if project else f"{LAST[p % len(LAST)]}^{FIRST[(p * 7) % len(FIRST)]}^{p}"
        birth = date(1930, 1, 1) + timedelta(days=rnd.randrange(0, 30000))
        pat_rows.append((p, pid, "", name, birth, "MF"[p % 2], project.pk if project else None, now))
        pat_project.append(project.pk if project else None)

    # Studies until the instance budget is spent: CT (100-300) + RTSTRUCT + RTPLAN + RTDOSE each.
    study_rows, series_rows, plan = [], [], []
    n_inst, s_id, se_id = 0, 0, 0
    while n_inst < instances:
        s_id += 1
        patient = rnd.randrange(1, patients + 1)
        project = pat_project[patient - 1]
        slices = min(rnd.randint(100, 300), max(1, instances - n_inst - 3))
        sdate = date(2012, 1, 1) + timedelta(days=rnd.randrange(0, 5000))
        study_rows.append((s_id, patient, f"{root}.1.{s_id}", sdate, "101500", str(s_id), f"ACC{s_id:08d}",
                           "RT planning thorax", project, now))
        frame = f"{root}.5.{s_id}"
        for number, (modality, count, sop) in enumerate(
                [("CT", slices, CT), ("RTSTRUCT", 1, RTSTRUCT), ("RTPLAN", 1, RTPLAN), ("RTDOSE", 1, RTDOSE)], 1):
            se_id += 1
            series_rows.append((se_id, s_id, f"{root}.2.{se_id}", modality, number,
                                f"{modality} series", sdate, "CHEST", frame, project, now, now))
            plan.append((se_id, s_id, modality, count, sop, sdate))
            n_inst += count

    with transaction.atomic():
        with connection.cursor() as django_cursor:
            copy = Copier(django_cursor.connection.cursor())
            log(f"COPY {patients} patients, {len(study_rows)} studies, {len(series_rows)} series")
            copy(Patient, ["id", "patient_id", "issuer_of_patient_id", "patient_name", "birth_date", "sex",
                           "project_id", "created_at"], pat_rows)
            copy(Study, ["id", "patient_id", "study_instance_uid", "study_date", "study_time", "study_id",
                         "accession_number", "description", "project_id", "created_at"], study_rows)
            copy(Series, ["id", "study_id", "series_instance_uid", "modality", "series_number", "description",
                          "series_date", "body_part_examined", "frame_of_reference_uid", "project_id",
                          "created_at", "updated_at"], series_rows)

            def instance_rows():
                i = 0
                for se, _study, modality, count, sop, sdate in plan:
                    received = datetime.combine(sdate, datetime.min.time(), timezone.utc)
                    for k in range(1, count + 1):
                        i += 1
                        yield (i, se, sop, f"{root}.3.{i}", k, EXPLICIT_LE, f"{i:064x}",
                               526000 if modality == "CT" else 80000, f"{i % 256:02x}/{i:x}.dcm",
                               "import:bench", received)

            log(f"COPY {n_inst} instances")
            started = time.perf_counter()
            copy(Instance, ["id", "series_id", "sop_class_uid", "sop_instance_uid", "instance_number",
                            "transfer_syntax_uid", "sha256", "size", "stored_path", "received_from", "received_at"],
                 instance_rows())
            log(f"  instances in {time.perf_counter() - started:.1f} s")

            spacing, orient = Jsonb([0.977, 0.977]), Jsonb([1, 0, 0, 0, 1, 0])

            def image_rows():
                i = 0
                for se, _study, modality, count, _sop, _d in plan:
                    for k in range(1, count + 1):
                        i += 1
                        if modality == "CT":
                            z = -300.0 + 2.5 * k
                            yield (i, 512, 512, 1, 16, "MONOCHROME2", spacing, 2.5,
                                   Jsonb([-250.0, -250.0, z]), orient, z)
                        elif modality == "RTDOSE":
                            yield (i, 100, 120, 80, 32, "MONOCHROME2", Jsonb([2.5, 2.5]), None, None, orient, None)

            started = time.perf_counter()
            copy(ImageInformation, ["instance_id", "rows", "columns", "number_of_frames", "bits_allocated",
                                    "photometric_interpretation", "pixel_spacing", "slice_thickness",
                                    "image_position_patient", "image_orientation_patient", "slice_location"],
                 image_rows())
            log(f"  image information in {time.perf_counter() - started:.1f} s")

            # RT objects, edges, checks, processing state, jobs.
            first_instance, i = {}, 0
            for se, _s, _m, count, _sop, _d in plan:
                first_instance[se] = i + 1
                i += count
            by_study: dict[int, dict[str, int]] = {}
            for se, study, modality, _c, _sop, _d in plan:
                by_study.setdefault(study, {})[modality] = se
            ss_rows, roi_rows, plan_rows, dose_rows, ref_rows, check_rows = [], [], [], [], [], []
            ss_id = 0
            for study, members in by_study.items():
                ct, rs, rp, rd = (members[m] for m in ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE"))
                ss_id += 1
                sdate = study_rows[study - 1][3]
                ss_rows.append((ss_id, first_instance[rs], "PLAN", "Plan ROIs", sdate, "APPROVED",
                                f"{root}.5.{study}", f"{root}.2.{ct}"))
                roi_rows += [(ss_id, n, name, "ORGAN" if n > 4 else "PTV", "#ff0000", 40, f"{root}.5.{study}")
                             for n, name in enumerate(ROIS, 1)]
                approval = "APPROVED" if study % 7 else "UNAPPROVED"
                plan_rows.append((first_instance[rp], "PLAN1", "Thorax", approval, sdate, "PHYSICIST^A",
                                  f"{root}.3.{first_instance[rs]}", 25, 2))
                dose_rows.append((first_instance[rd], "PHYSICAL", "PLAN", "GY", f"{root}.3.{first_instance[rp]}"))
                ref_rows += [(study, rs, ct, f"{root}.2.{ct}", "series", False),
                             (study, rp, rs, f"{root}.2.{rs}", "structure_set", False),
                             (study, rd, rp, f"{root}.2.{rp}", "plan", False)]
                for modality, se in members.items():
                    n = plan[se - 1][3]
                    check_rows.append((se, study, now, modality, n, True if modality == "CT" else None,
                                       approval if modality in ("RTPLAN", "RTSTRUCT") else "", ""))
            copy(RTStructureSet, ["id", "instance_id", "label", "name", "structure_set_date", "approval_status",
                                  "referenced_frame_of_reference_uid", "referenced_series_uid"], ss_rows)
            copy(ROI, ["structure_set_id", "number", "name", "interpreted_type", "color", "contour_count",
                       "referenced_frame_of_reference_uid"], roi_rows)
            copy(RTPlan, ["instance_id", "label", "name", "approval_status", "review_date", "reviewer_name",
                          "referenced_structure_set_uid", "fractions_planned", "beam_count"], plan_rows)
            copy(RTDose, ["instance_id", "dose_type", "dose_summation_type", "dose_units", "referenced_plan_uid"],
                 dose_rows)
            copy(SeriesReference, ["study_id", "source_id", "target_id", "target_uid", "via", "missing"], ref_rows)
            copy(SeriesCheck, ["series_id", "study_id", "checked_at", "modality", "instances", "complete",
                               "approval_status", "worst_severity"], check_rows)
            copy(SeriesState, ["series_id", "status", "template_id", "evaluated_at"],
                 ((se, series_statuses[se % len(series_statuses)], template.pk if se % 3 == 0 else None, now)
                  for se in range(1, se_id + 1)))
            job_rows = []
            for se in range(1, se_id + 1):
                if se % 5 == 0 and plan[se - 1][2] == "CT":
                    status = job_statuses[se % len(job_statuses)]
                    key = projects[se % 4].key
                    created = now - timedelta(minutes=se_id - se)
                    job_rows.append((se, template.pk, key, status, "exporting" if status == "finished" else "processing",
                                     created, created))
            copy(Job, ["series_id", "template_id", "project_key", "status", "stage", "created_at", "updated_at"],
                 job_rows)
            for model in (Patient, Study, Series, Instance, ImageInformation, RTStructureSet, ROI, RTPlan, RTDose,
                          SeriesReference, SeriesCheck, SeriesState, Job):
                table = model._meta.db_table
                django_cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM \"{table}\"), 0) + 1, false)")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"patients": patients, "studies": len(study_rows), "series": len(series_rows), "instances": n_inst,
            "jobs": len(job_rows), "rows": copy.counts, "projects": [p.key for p in projects]}


def personas(project_key: str) -> dict:
    """An administrator and a non-staff data manager of one project (no clinical pool); API keys."""
    from django.contrib.auth import get_user_model

    from dicomflow.accounts.services import create_api_key
    from dicomflow.projects.models import Project, ProjectMembership, Role

    User = get_user_model()
    password = uuid.uuid4().hex
    admin = User.objects.create_superuser("bench-admin", "admin@example.invalid", password)
    member = User.objects.create_user("bench-member", "member@example.invalid", password)
    ProjectMembership.objects.create(project=Project.objects.get(key=project_key), user=member,
                                     role=Role.DATA_MANAGER)
    return {
        "admin": {"username": admin.username, "password": password, "key": create_api_key(admin, admin)[1]},
        "member": {"username": member.username, "password": password, "key": create_api_key(member, member)[1]},
    }


# --- server and measurement ---------------------------------------------------------------------------------
def start_server(env: dict, port: int, workers: int, log_path: Path) -> subprocess.Popen:
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    command = [gunicorn, "_bench_wsgi:application", "--pythonpath", str(HERE), "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), "--worker-class", "sync", "--timeout", "120", "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log_path.read_text()[-3000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/login/", timeout=2)
            return process
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def login(base: str, who: dict):
    import httpx

    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    page = client.get("/login/")
    token = client.cookies.get("csrftoken")
    answer = client.post("/login/", data={"username": who["username"], "password": who["password"],
                                          "csrfmiddlewaretoken": token}, headers={"Referer": base + "/login/"})
    if answer.status_code != 302:
        raise RuntimeError(f"login of {who['username']} failed ({answer.status_code}, {page.status_code})")
    return client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) + 0) + 0.5) - 1))
    return ordered[k]


def scenarios(world: dict, rnd: random.Random) -> list[tuple[str, str, str, object]]:
    """(name, persona, kind, url maker): kind "api" uses the API key, "page" the logged-in session."""
    clinical = world["clinical_ids"]
    project_ids = world["project_ids"]
    studies = world["study_uids"]
    project_studies = world["project_study_uids"]
    key = world["project"]
    statuses = ["matched", "not_matched", "not_evaluated", "sent", "processing", "processed", "failed", "no_template"]

    def prefix(ids):
        return lambda: rnd.choice(ids)[: rnd.choice([3, 4, 5])]

    def name_part():
        return rnd.choice(LAST)[:4].lower()

    out = []
    for persona, ids, study_uids in (("admin", clinical, studies), ("member", project_ids, project_studies)):
        p = prefix(ids)
        out += [
            ("floor: api projects", persona, "api", lambda: "/api/projects/"),
            ("api patients ?q=ID prefix", persona, "api", lambda p=p: f"/api/patients/?q={p()}"),
            ("api patients ?name=", persona, "api", lambda: f"/api/patients/?name={name_part()}"),
            ("page patients ?q=ID prefix", persona, "page", lambda p=p: f"/patients/?q={p()}"),
            ("page patients ?q=name", persona, "page", lambda: f"/patients/?q={name_part()}"),
            ("page series for processing", persona, "page", lambda: "/processing/series/"),
            ("page series ?status=", persona, "page",
             lambda: f"/processing/series/?status={rnd.choice(statuses)}"),
            ("api study rt-tree", persona, "api", lambda u=study_uids: f"/api/studies/{rnd.choice(u)}/rt-tree/"),
            ("page study (RT tree)", persona, "page", lambda u=study_uids: f"/studies/{rnd.choice(u)}/"),
            ("api jobs", persona, "api", lambda: "/api/jobs/"),
            ("page jobs", persona, "page", lambda: "/jobs/"),
            ("page jobs ?status=failed", persona, "page", lambda: "/jobs/?status=failed"),
            ("lookup autocomplete", persona, "page", lambda p=p: f"/projects/{key}/lookup/suggest.json?q={p()}"),
        ]
    return out


def measure(base: str, world: dict, keys: dict, requests: int, explain_dir: Path) -> list[dict]:
    import httpx

    rnd = random.Random(7)
    sessions = {name: login(base, who) for name, who in keys.items()}
    api = {name: httpx.Client(base_url=base, timeout=60, headers={"X-Api-Key": who["key"]})
           for name, who in keys.items()}
    results, makers = [], {}
    for name, persona, kind, make in scenarios(world, rnd):
        makers[(name, persona)] = make
        client = api[persona] if kind == "api" else sessions[persona]
        for _ in range(3):  # warm-up: connections, caches of the worker processes
            client.get(make())
        times, queries, slowest_sql = [], set(), 0.0
        for _ in range(requests):
            url = make()
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{name} ({persona}): {url} answered {response.status_code}: {response.text[:300]}")
            times.append(elapsed)
            queries.add(int(response.headers.get("X-Query-Count", -1)))
            slowest_sql = max(slowest_sql, float(response.headers.get("X-Slowest-Query-Ms", 0)))
        row = {"name": name, "persona": persona, "kind": kind, "requests": requests,
               "p50_ms": round(statistics.median(times), 1), "p95_ms": round(percentile(times, 95), 1),
               "max_ms": round(max(times), 1), "queries": sorted(queries), "slowest_query_ms": round(slowest_sql, 1)}
        results.append(row)
        flag = "ok" if row["p95_ms"] < TARGET_MS else "SLOW"
        log(f"{name:<32} {persona:<7} p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
            f"queries {'/'.join(map(str, row['queries']))}  [{flag}]")
    # EXPLAIN of the slowest statement of the three slowest scenarios (by p95).
    for row in sorted(results, key=lambda r: -r["p95_ms"])[:3]:
        client = api[row["persona"]] if row["kind"] == "api" else sessions[row["persona"]]
        tag = f"{row['name']}-{row['persona']}"
        client.get(makers[(row["name"], row["persona"])](), headers={"X-Bench-Explain": tag})
        row["explain_file"] = str(explain_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:80] + ".txt"))
    for c in list(sessions.values()) + list(api.values()):
        c.close()
    return results


def world_facts(project_key: str) -> dict:
    from dicomflow.catalog.models import Patient, Study

    clinical = list(Patient.objects.filter(project__isnull=True).values_list("patient_id", flat=True)[:5000])
    project_ids = list(Patient.objects.filter(project__key=project_key).values_list("patient_id", flat=True))
    studies = list(Study.objects.filter(project__isnull=True).order_by("?").values_list(
        "study_instance_uid", flat=True)[:500])
    project_studies = list(Study.objects.filter(project__key=project_key).order_by("?").values_list(
        "study_instance_uid", flat=True)[:500])
    return {"clinical_ids": clinical, "project_ids": project_ids, "study_uids": studies,
            "project_study_uids": project_studies, "project": project_key}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=0, help="default: instances / 500 (at least 20)")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per scenario")
    parser.add_argument("--database", default="dicomflow_catalog_bench")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the database (and its home) afterwards")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    # Stopped from outside (SIGTERM, or SIGINT even when started in the background): clean up all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = os.environ.get("PG_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    if not server.startswith(("postgres://", "postgresql://")):
        parser.error("PG_URL must be a postgres:// URL (the benchmark creates its own database on that server)")
    patients = args.patients or max(20, args.instances // 500)
    url = with_database(server, args.database)
    home = Path(tempfile.mkdtemp(prefix="catalog-bench-"))
    env = dict(os.environ, DATABASE_URL=url, DICOMFLOW_HOME=str(home), DJANGO_SETTINGS_MODULE="dicomflow.settings",
               BENCH_EXPLAIN_DIR=str(home / "explain"), DICOMFLOW_LOG_LEVEL="WARNING",
               DICOMFLOW_DB_CONN_MAX_AGE=os.environ.get("DICOMFLOW_DB_CONN_MAX_AGE", "60"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])))
    env.pop("CELERY_BROKER_URL", None)
    (home / "explain").mkdir()
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "DICOMFLOW_HOME", "DJANGO_SETTINGS_MODULE",
                                           "DICOMFLOW_LOG_LEVEL")})
    sys.path.insert(0, str(ROOT / "src"))
    log(f"database {args.database} on {urlsplit(server).hostname}; {args.instances} instances, {patients} patients")
    create_database(server, args.database)
    process = None
    try:
        import django
        from django.core.management import call_command

        django.setup()
        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        log(f"migrated in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        shape = fill(args.instances, patients, args.seed)
        fill_s = time.perf_counter() - started
        log(f"filled in {fill_s:.1f} s: {shape['instances']} instances")
        keys = personas(shape["projects"][1])
        world = world_facts(shape["projects"][1])
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            size = cursor.fetchone()[0]
        connection.close()
        port = free_port()
        process = start_server(env, port, args.web_workers, home / "gunicorn.log")
        results = measure(f"http://127.0.0.1:{port}", world, keys, args.requests, home / "explain")
        slow = [r for r in results if r["p95_ms"] >= TARGET_MS]
        print()
        print(f"catalog: {shape['patients']} patients, {shape['studies']} studies, {shape['series']} series, "
              f"{shape['instances']} instances, {shape['jobs']} jobs; database {size}; filled in {fill_s:.0f} s")
        print(f"{'request':<32} {'as':<7} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}")
        for r in results:
            print(f"{r['name']:<32} {r['persona']:<7} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
                  f"{'/'.join(map(str, r['queries'])):>8}")
        explains = {}
        for r in results:
            if r.get("explain_file") and Path(r["explain_file"]).exists():
                explains[f"{r['name']} ({r['persona']})"] = Path(r["explain_file"]).read_text()
        if explains:
            first = next(iter(explains))
            print(f"\nEXPLAIN of the slowest statement of the slowest request, {first}:\n{explains[first]}")
        print(f"\n{'PASS' if not slow else 'MISS'}: every p95 < {TARGET_MS:.0f} ms"
              + ("" if not slow else f" except {', '.join(r['name'] + ' (' + r['persona'] + ')' for r in slow)}"))
        if args.json:
            args.json.write_text(json.dumps({"shape": shape, "database_size": size, "fill_seconds": round(fill_s, 1),
                                             "target_p95_ms": TARGET_MS, "results": results, "explain": explains},
                                            indent=2, default=str))
        return 0
    finally:
        if process is not None:
            stop_server(process)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001
            pass
        if not args.keep:
            drop_database(server, args.database)
            shutil.rmtree(home, ignore_errors=True)
        else:
            log(f"kept database {args.database} and home {home}")


if __name__ == "__main__":
    sys.exit(main())
