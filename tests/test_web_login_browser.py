"""A real browser (Debian's Chromium through Playwright): a project member who is not staff logs in
at ``/login/``, lands on the page they asked for, sees the catalog, and logs out."""

from __future__ import annotations

import pytest

from dicomflow.projects.models import ProjectMembership, Role
from dicomflow.projects.services import create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_non_staff_member_logs_in_sees_home_and_logs_out(browser_page, live_server, django_user_model):
    page = browser_page
    bob = django_user_model.objects.create_user("bob", password="bob's long password")
    ProjectMembership.objects.create(project=create_project("brw-b", "B"), user=bob, role=Role.VIEWER)

    page.goto(f"{live_server.url}/studies/")
    assert page.url == f"{live_server.url}/login/?next=/studies/"
    page.fill("#id_username", "bob")
    page.fill("#id_password", "wrong")
    page.click("#df-login")
    assert page.is_visible("#df-login-error")
    page.fill("#id_username", "bob")
    page.fill("#id_password", "bob's long password")
    page.click("#df-login")
    page.wait_for_url(f"{live_server.url}/studies/")
    assert page.inner_text("#df-user") == "bob"

    page.click("text=Home")
    page.wait_for_selector("#df-counts")
    assert page.inner_text("#df-count-studies") == "0"  # project B holds nothing yet
    assert not page.is_visible("a[href='/audit/']") and not page.is_visible("a[href='/admin/']")

    page.click("#df-logout")
    page.wait_for_url(f"{live_server.url}/login/")
    page.goto(f"{live_server.url}/")
    assert page.url == f"{live_server.url}/login/?next=/"
