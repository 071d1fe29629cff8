"""Intake filters: the pure rules, and every filtered source (watched-folder import, the receiver)
going through the import session — dropped files are ignored with the rule as reason and leave the
store; excluded series are catalogued but kept out of the rules' evaluation."""

from __future__ import annotations

import os
import subprocess
from datetime import date, datetime

import pytest
from conftest import require_tool

from dicomflow.core.intake_filter import DEFAULT_FILTER, DROP, NO_FILTER, IntakeFilter, parse_dicom_datetime
from dicomflow.testing import synth


# --- pure rules ---------------------------------------------------------------------------------------
def test_study_dates_pull_start_and_window():
    f = IntakeFilter(pull_start=datetime(2024, 3, 1, 12, 0), study_date_from=date(2024, 1, 1),
                     study_date_to=date(2024, 12, 31), name="trial")
    assert f.drop_reason("20240301", "130000") is None
    assert f.drop_reason("20240301", "115959") == "study before the intake filter's pull start (trial)"
    assert f.drop_reason("20230101") == "study date before the intake filter's window (trial)"
    assert f.drop_reason("20250101") == "study date after the intake filter's window (trial)"
    assert f.drop_reason("") is None and f.drop_reason("garbage") is None  # nothing to judge by: taken
    assert parse_dicom_datetime("20240301", "1230") == datetime(2024, 3, 1, 12, 30)
    assert parse_dicom_datetime("20240301", "") == datetime(2024, 3, 1)


def test_series_patterns():
    assert DEFAULT_FILTER.series_exclusion("Topogram 0.6 T20f") is not None
    assert DEFAULT_FILTER.series_exclusion("SCOUT AP") is not None
    assert DEFAULT_FILTER.series_exclusion("Thorax 3mm", ["ORIGINAL", "PRIMARY", "AXIAL"]) is None
    assert "image type" in DEFAULT_FILTER.series_exclusion("Thorax", ["ORIGINAL", "PRIMARY", "LOCALIZER"])
    assert NO_FILTER.series_exclusion("Scout", ["LOCALIZER"]) is None
    custom = IntakeFilter(exclude_descriptions="dose report\n*SR*", exclude_image_types="", excluded_series=DROP)
    assert custom.exclude_descriptions == ("dose report", "*sr*")
    assert custom.series_exclusion("Dose Report") and not custom.series_exclusion("Dose Report 2")
    with pytest.raises(ValueError):
        IntakeFilter(excluded_series="sometimes")


# --- through the import session -----------------------------------------------------------------------
@pytest.fixture
def data(tmp_path):
    patient = synth.PatientSpec("FILT-0001", "Filter^Fay", "F", "19700101")
    ct = synth.write_image_series(tmp_path / "in" / "ct", patient, n_slices=3, rows=16, cols=16,
                                  series_description="Thorax 3mm")
    scout = synth.write_image_series(tmp_path / "in" / "scout", patient, n_slices=1, rows=16, cols=16,
                                     study_uid=ct.study_uid, series_number=2, series_description="Localizer",
                                     extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    typed = synth.write_image_series(tmp_path / "in" / "typed", patient, n_slices=1, rows=16, cols=16,
                                     study_uid=ct.study_uid, series_number=3, series_description="AP",
                                     extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    return {"ct": ct, "scout": scout, "typed": typed, "root": tmp_path / "in"}


@pytest.mark.django_db
def test_default_filter_catalogues_localizers_but_keeps_them_out_of_processing(data):
    from dicomflow.catalog.models import Series
    from dicomflow.intake.services import import_paths
    from dicomflow.processing.services import evaluate_new_series

    report = import_paths([data["root"]], workers=1, intake_filter=DEFAULT_FILTER, analyse=False)
    assert (report.files_seen, report.instances_new, report.ignored) == (5, 5, [])
    excluded = dict(Series.objects.values_list("series_instance_uid", "processing_excluded"))
    assert excluded[data["ct"].series_uid] == ""
    assert "series description" in excluded[data["scout"].series_uid]
    assert "image type" in excluded[data["typed"].series_uid]
    evaluated = {s.series.series_instance_uid for s in evaluate_new_series()}
    assert evaluated == {data["ct"].series_uid}


@pytest.mark.django_db
def test_a_dropping_filter_ignores_with_reasons_and_cleans_the_store(data):
    from django.conf import settings

    from dicomflow.catalog.models import Instance
    from dicomflow.intake.models import IntakeFilter as FilterRow
    from dicomflow.intake.services import import_paths

    row = FilterRow.objects.create(name="no-scouts", excluded_series=DROP)
    report = import_paths([data["root"]], workers=1, intake_filter=row.core(), analyse=False)
    assert (report.files_seen, report.instances_new) == (5, 3)
    assert sorted(i["reason"] for i in report.ignored) == [
        "image type matches an excluded pattern (localizer/scout): dropped by the intake filter (no-scouts)",
        "series description matches an excluded pattern (localizer/scout): dropped by the intake filter (no-scouts)",
    ]
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == set(data["ct"].sop_instance_uids)
    stored = {p.name for p in (settings.STORE_DIR and __import__("pathlib").Path(settings.STORE_DIR)).rglob("*.dcm")}
    assert not any(uid in name for uid in data["scout"].sop_instance_uids + data["typed"].sop_instance_uids
                   for name in stored)

    later = FilterRow.objects.create(name="from-2999", study_date_from=date(2999, 1, 1),
                                     exclude_descriptions="", exclude_image_types="")
    again = import_paths([data["root"] / "scout"], workers=1, intake_filter=later.core(), analyse=False)
    assert [i["reason"] for i in again.ignored] == ["study date before the intake filter's window (from-2999)"]


@pytest.mark.django_db
def test_watched_folder_uses_its_filter(data, tmp_path):
    from dicomflow.intake.filters import folder_filter
    from dicomflow.intake.models import IntakeFilter as FilterRow
    from dicomflow.intake.models import WatchedFolder

    folder = WatchedFolder.objects.create(name="tps", path=str(tmp_path))
    assert folder_filter(folder) == DEFAULT_FILTER
    folder.intake_filter = FilterRow.objects.create(name="strict", excluded_series=DROP)
    folder.save()
    assert folder_filter(WatchedFolder.objects.get(pk=folder.pk)).excluded_series == DROP


@pytest.mark.dcmtk
@pytest.mark.django_db(transaction=True)
def test_receiver_applies_its_filter(data, settings):
    from dicomflow.catalog.models import Instance
    from dicomflow.intake.models import ImportRun
    from dicomflow.intake.models import IntakeFilter as FilterRow
    from dicomflow.intake.network.scp import StorageSCP

    FilterRow.objects.create(name="receiver", excluded_series=DROP)
    settings.DICOMFLOW_SCP_INTAKE_FILTER = "receiver"
    exe = require_tool("storescu")
    with StorageSCP("DFFILT", 0, host="127.0.0.1") as scp:
        files = [*data["ct"].paths, *data["scout"].paths]
        result = subprocess.run([exe, "-aec", "DFFILT", "127.0.0.1", str(scp.port), *map(str, files)],
                                env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    run = ImportRun.objects.get()
    assert (run.files_seen, run.instances_new, len(run.ignored)) == (4, 3, 1)
    assert "dropped by the intake filter (receiver)" in run.ignored[0]["reason"]
    assert not Instance.objects.filter(sop_instance_uid__in=data["scout"].sop_instance_uids).exists()
