"""Query/Retrieve SCU against Debian's Orthanc as the "clinical PACS" (its DICOM server on, started
by the test): ``dicomflow qr find`` by Patient ID and by a wildcard name, ``qr get`` with C-GET and,
with ``--move``, through C-MOVE to dicomflow's own receiver (``dicomflow scp``). Every command runs
as a subprocess on its own ``$DICOMFLOW_HOME`` (SQLite), like an operator would run it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import require_tool

from dicomflow.testing import synth

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _peers  # noqa: E402

pytestmark = pytest.mark.dcmtk

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))
PACS_AET = "CLINPACS"
OUR_AET = "DFQR"
SLICES = 5


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc with two patients' CT studies loaded over its REST API; it knows our receiver."""
    require_tool("/usr/sbin/Orthanc")
    root = tmp_path_factory.mktemp("orthanc")
    receiver_port = _peers.free_port()
    data = tmp_path_factory.mktemp("pacs-data")
    jane = synth.write_image_series(data / "jane", synth.PatientSpec("QR-PAT-1", "Doe^Jane", "F", "19600101"),
                                    n_slices=SLICES, rows=32, cols=32, series_description="Thorax 3mm")
    scout = synth.write_image_series(data / "jane-scout", jane.patient, n_slices=1, rows=32, cols=32,
                                     study_uid=jane.study_uid, series_number=9, series_description="Scout AP",
                                     extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    richard = synth.write_image_series(data / "richard", synth.PatientSpec("QR-PAT-2", "Roe^Richard", "M", "19550505"),
                                       n_slices=3, rows=32, cols=32)
    with _peers.Orthanc(root, dicom_aet=PACS_AET,
                        modalities={"dicomflow": [OUR_AET, "127.0.0.1", receiver_port]}) as orthanc:
        orthanc.upload([*jane.paths, *scout.paths, *richard.paths], clients=1)
        assert orthanc.instance_count() == SLICES + 1 + 3
        yield {"node": f"{PACS_AET}@127.0.0.1:{orthanc.dicom_port}", "jane": jane, "scout": scout,
               "richard": richard, "receiver_port": receiver_port, "orthanc": orthanc}


@pytest.fixture(scope="module")
def template_root(tmp_path_factory):
    return tmp_path_factory.mktemp("template")


@pytest.fixture
def home(tmp_path, template_root) -> Path:
    """A fresh, migrated home (copied from a template migrated once: migrating costs seconds)."""
    _peers.prepare_home(tmp_path / "home", template_root)
    return tmp_path / "home"


def sql(home: Path, query: str, *params) -> list[tuple]:
    with sqlite3.connect(home / "dicomflow.sqlite3") as db:
        return db.execute(query, params).fetchall()


def env_for(home: Path) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the home's own SQLite
    environ.update({"DICOMFLOW_HOME": str(home), "DICOMFLOW_SCP_AET": OUR_AET, "DICOMFLOW_FSYNC": "never",
                    "DICOMFLOW_EVALUATE_ON_IMPORT": "0"})
    return environ


def run(home: Path, *args: str, ok: bool = True) -> dict:
    result = subprocess.run([DICOMFLOW, *args, "--json"], env=env_for(home), capture_output=True, text=True,
                            timeout=180)
    if ok:
        assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    doc["_rc"] = result.returncode
    doc["_stderr"] = result.stderr
    return doc


def test_find_by_patient_id_and_by_wildcard_name(pacs, home):
    jane, richard = pacs["jane"], pacs["richard"]
    by_id = run(home, "qr", "find", pacs["node"], "--patient-id", "QR-PAT-1")["studies"]
    assert [s["study_uid"] for s in by_id] == [jane.study_uid]
    assert by_id[0]["patient_id"] == "QR-PAT-1"
    assert by_id[0]["modalities"] == ["CT"]
    assert by_id[0]["series_count"] == 2  # the thorax series and the scout
    assert by_id[0]["in_catalog"] is False
    assert set(by_id[0]) >= {"study_uid", "patient_id", "study_date", "modalities", "description", "series_count"}

    by_name = run(home, "qr", "find", pacs["node"], "--name", "Doe^*")["studies"]
    assert [s["study_uid"] for s in by_name] == [jane.study_uid]
    by_other_name = run(home, "qr", "find", pacs["node"], "--name", "R*")["studies"]
    assert [s["study_uid"] for s in by_other_name] == [richard.study_uid]
    assert run(home, "qr", "find", pacs["node"], "--name", "Nobody*")["studies"] == []
    assert run(home, "qr", "find", pacs["node"], "--modality", "MR")["studies"] == []
    both = run(home, "qr", "find", pacs["node"], "--modality", "CT")["studies"]
    assert {s["study_uid"] for s in both} == {jane.study_uid, richard.study_uid}

    series = run(home, "qr", "series", pacs["node"], "--study", jane.study_uid)["series"]
    assert {s["series_uid"] for s in series} == {jane.series_uid, pacs["scout"].series_uid}

    bad = run(home, "qr", "find", pacs["node"], "--date-from", "yesterday", ok=False)
    assert bad["_rc"] == 1 and "YYYY-MM-DD" in bad["error"]


def test_get_pulls_every_instance_through_the_import_service(pacs, home):
    jane, scout = pacs["jane"], pacs["scout"]
    doc = run(home, "qr", "get", pacs["node"], "--study", jane.study_uid)
    assert doc["method"] == "c-get"
    assert doc["retrieve"] == {"status": "0x0000", "completed": SLICES + 1, "failed": 0, "warning": 0}
    assert doc["files_seen"] == SLICES + 1
    assert doc["instances_new"] == SLICES + 1
    assert (doc["instances_duplicate"], doc["conflicts"], doc["ignored"]) == (0, [], [])
    assert (doc["patients"], doc["studies"], doc["series"]) == (1, 1, 2)
    stats = run(home, "stats")
    assert (stats["instances"], stats["series"]) == (SLICES + 1, 2)

    # the scout is catalogued but kept out of processing by the default intake filter
    excluded = dict(sql(home, "SELECT series_instance_uid, processing_excluded FROM catalog_series"))
    assert excluded[jane.series_uid] == ""
    assert "localizer/scout" in excluded[scout.series_uid]

    again = run(home, "qr", "get", pacs["node"], "--study", jane.study_uid, "--series", jane.series_uid)
    assert again["retrieve"]["completed"] == SLICES
    assert (again["instances_new"], again["instances_duplicate"]) == (0, SLICES)
    assert run(home, "stats")["instances"] == SLICES + 1


def test_get_with_a_dropping_filter_and_an_unknown_node(pacs, home):
    """A pull whose filter's study-date window excludes the study: every file ignored with the rule."""
    sql(home, "INSERT INTO intake_intakefilter (name, study_date_from, exclude_descriptions, exclude_image_types, "
              "excluded_series) VALUES ('future', '2999-01-01', '', '', 'catalogue')")
    doc = run(home, "qr", "get", pacs["node"], "--study", pacs["richard"].study_uid, "--filter", "future")
    assert doc["files_seen"] == 3 and doc["instances_new"] == 0
    assert [i["reason"] for i in doc["ignored"]] == ["study date before the intake filter's window (future)"] * 3
    assert run(home, "stats")["instances"] == 0
    store = home / "store"
    assert not store.exists() or not [p for p in store.rglob("*.dcm")]  # dropped files left the store

    unknown = run(home, "qr", "get", pacs["node"], "--study", pacs["richard"].study_uid, "--filter", "nope",
                  ok=False)
    assert unknown["_rc"] == 1 and "no intake filter named 'nope'" in unknown["error"]
    refused = run(home, "qr", "find", f"NOTPACS@127.0.0.1:{pacs['orthanc'].dicom_port}", ok=False)
    assert refused["_rc"] == 1 and "rejected the association" in refused["error"]


def test_move_goes_through_the_receiver(pacs, home):
    require_tool("echoscu")
    richard = pacs["richard"]
    port = pacs["receiver_port"]
    receiver = subprocess.Popen([DICOMFLOW, "scp", "--port", str(port), "--aet", OUR_AET, "--host", "127.0.0.1"],
                                env=env_for(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["echoscu", "-aec", OUR_AET, "127.0.0.1", str(port)], capture_output=True).returncode:
            assert receiver.poll() is None and time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.2)
        doc = run(home, "qr", "get", pacs["node"], "--study", richard.study_uid, "--move")
        assert doc["method"] == "c-move"
        assert doc["retrieve"] == {"status": "0x0000", "completed": 3, "failed": 0, "warning": 0}
        assert (doc["files_seen"], doc["instances_new"], doc["instances_duplicate"]) == (3, 3, 0)
        assert (doc["patients"], doc["studies"], doc["series"]) == (1, 1, 1)
        assert run(home, "stats")["instances"] == 3
        again = run(home, "qr", "get", pacs["node"], "--study", richard.study_uid, "--move")
        assert (again["files_seen"], again["instances_new"], again["instances_duplicate"]) == (3, 0, 3)
    finally:
        receiver.terminate()
        receiver.wait(30)
    # the audit log names the node and counts, never a UID
    entries = sql(home, "SELECT action, outcome, detail FROM accounts_auditentry ORDER BY id")
    assert [a for a, _, _ in entries] == ["qr_retrieve", "qr_retrieve"]
    assert all(richard.study_uid not in d for _, _, d in entries)
    assert "3 new" in entries[0][2]


def test_orthanc_really_serves_dicom(pacs):
    """Guard against a silently disabled DICOM server: Orthanc answers a C-ECHO from anyone."""
    echo = require_tool("echoscu")
    result = subprocess.run([echo, "-aec", PACS_AET, "127.0.0.1", str(pacs["orthanc"].dicom_port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert httpx.get(pacs["orthanc"].url + "/system", timeout=10).json()["DicomAet"] == PACS_AET


# --- the same services through the API and the lookup page (in-process, on the test database) ---------
@pytest.fixture
def pacs_node(pacs, db):
    from dicomflow.export.models import DicomNode

    port = int(pacs["node"].rsplit(":", 1)[1])
    return DicomNode.objects.create(name="clinical-pacs", ae_title=PACS_AET, host="127.0.0.1", port=port,
                                    our_ae_title=OUR_AET)


def _api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_api_find_and_retrieve_are_role_checked_and_audited(pacs, pacs_node, admin_user, django_user_model):
    from dicomflow.accounts.models import AuditEntry
    from dicomflow.catalog.models import Instance

    jane = pacs["jane"]
    charlie = django_user_model.objects.create_user("charlie")
    assert _api(charlie).get("/api/qr/nodes/").status_code == 403
    refused = _api(charlie).post("/api/qr/find/", {"node": "clinical-pacs", "patient_id": "QR-PAT-1"}, format="json")
    assert refused.status_code == 403
    assert AuditEntry.objects.filter(action="qr_find", outcome="denied", username="charlie").count() == 1

    admin = _api(admin_user)
    assert admin.get("/api/qr/nodes/").json() == [{"name": "clinical-pacs", "ae_title": PACS_AET}]
    address = admin.post("/api/qr/find/", {"node": pacs["node"], "patient_id": "QR-PAT-1"}, format="json")
    assert address.status_code == 400  # never an address from the web: configured nodes only
    found = admin.post("/api/qr/find/", {"node": "clinical-pacs", "patient_name": "Doe*"}, format="json")
    assert found.status_code == 200, found.content
    assert [s["study_uid"] for s in found.json()["studies"]] == [jane.study_uid]

    assert _api(charlie).post("/api/qr/retrieve/", {"node": "clinical-pacs", "study": jane.study_uid},
                              format="json").status_code == 403
    pulled = admin.post("/api/qr/retrieve/", {"node": "clinical-pacs", "study": jane.study_uid,
                                              "series": [jane.series_uid]}, format="json")
    assert pulled.status_code == 200, pulled.content
    assert (pulled.json()["instances_new"], pulled.json()["method"]) == (SLICES, "c-get")
    assert Instance.objects.filter(series__series_instance_uid=jane.series_uid).count() == SLICES
    assert AuditEntry.objects.filter(action="qr_retrieve", username="charlie", outcome="denied").count() == 1
    entry = AuditEntry.objects.filter(action="qr_retrieve", username=admin_user.username).get()
    assert entry.outcome == "ok" and entry.object == "node clinical-pacs" and jane.study_uid not in entry.detail

    unknown = admin.post("/api/qr/retrieve/", {"node": "nope", "study": jane.study_uid}, format="json")
    assert unknown.status_code == 400


@pytest.mark.django_db
def test_lookup_page_find_in_pacs_then_pull_then_stage_button(pacs, pacs_node, admin_user, client):
    from dicomflow.projects.models import Project

    richard = pacs["richard"]
    project = Project.objects.create(key="QR-LOOKUP", name="Lookup")
    client.force_login(admin_user)
    url = f"/projects/{project.key}/lookup/"
    page = client.get(url)
    assert b"Find in PACS" in page.content and b"clinical-pacs" in page.content
    found = client.get(url, {"pacs_node": "clinical-pacs", "pacs_id": "QR-PAT-2", "pacs_find": "1"})
    html = found.content.decode()
    assert f'data-study="{richard.study_uid}"' in html and ">Pull</button>" in html
    assert pacs["jane"].study_uid not in html

    pulled = client.post(f"/projects/{project.key}/lookup/pull/?pacs_node=clinical-pacs&pacs_id=QR-PAT-2&pacs_find=1",
                         {"node": "clinical-pacs", "study": richard.study_uid, "patient_id": "QR-PAT-2"})
    html = pulled.content.decode()
    assert pulled.status_code == 200
    assert "Pulled</strong>: 3 files, 3 new" in html
    assert 'class="df-edit"' in html and f'data-study="{richard.study_uid}"' in html  # now in the lookup: Stage
    assert '<span class="badge ok">yes</span>' in html  # the PACS row now shows "in catalog"
