"""The RT quality loop in a real browser: a data manager rates a finished job's contours on its
page and reads the statistics; the ratings come back in the CSV."""

from __future__ import annotations

import csv
import io

import pytest

from dicomflow.processing import services
from dicomflow.processing.models import Job
from fixtures_celery import wait_for
from fixtures_processing import world  # noqa: F401  (pytest fixture)
from test_desk_browser import Watch, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_data_manager_rates_contours_and_reads_statistics(browser_page, live_server, world, celery_worker_process):
    page, base = browser_page, live_server.url
    # the session's real worker runs the job (an inline run here would race it for the dispatched stages)
    [job] = services.send_for_processing(world["alice"], project_key="proc-a", template_name="ct-body-lungs",
                                         series_uids=[world["series"]["copy"].series_instance_uid])
    wait_for(lambda: Job.objects.get(pk=job.pk).is_over, timeout=300, worker=celery_worker_process,
             what="the job to end")
    job.refresh_from_db()
    assert job.status == "finished", job.error
    watch = Watch(page)
    log_in(page, base, "alice", "pw-alice-123")
    page.goto(f"{base}/jobs/{job.pk}/")
    page.get_by_label("Rating of Body").select_option(label="Major edits")
    page.get_by_label("Minutes editing Body").fill("6")
    page.get_by_label("Comment on Body").fill("couch in the outline")
    page.get_by_label("Rating of Lung_L").select_option(label="No edit")
    page.get_by_label("Overall score (0–10)").select_option("7")
    page.get_by_role("button", name="Save rating").click()
    page.wait_for_load_state()
    ratings = page.locator("#df-ratings")
    assert "7/10" in ratings.inner_text() and "Body: major (6 min)" in ratings.inner_text()
    # the form keeps what was chosen
    assert page.get_by_label("Rating of Body").input_value() == "major"

    page.get_by_role("link", name="Statistics").click()
    page.wait_for_load_state()
    assert page.locator("#df-per-template").inner_text().count("ct-body-lungs") == 1
    csv_url = page.get_by_role("link", name="Download ratings (CSV)").get_attribute("href")
    response = page.request.get(base + csv_url)
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert sorted((r["roi"], r["rating"], r["minutes"]) for r in rows) == [("Body", "major", "6"), ("Lung_L", "no_edit", "")]
    assert watch.problems == []
