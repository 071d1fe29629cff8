"""The admin's DICOM nodes page (Export → DICOM nodes): listed, and checked with C-ECHO against a
real receiver."""

from __future__ import annotations

import pytest
from django.urls import reverse

from dicomflow.export.models import DicomNode


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("admin", "admin@example.org", "pw-admin-123"))
    return client


@pytest.mark.django_db(transaction=True)
def test_dicom_nodes_are_listed_and_echoed(staff):
    from dicomflow.intake.network.scp import StorageSCP

    scp = StorageSCP("ECHOSCP", 0, [], host="127.0.0.1").start()
    try:
        up = DicomNode.objects.create(name="receiver", ae_title="ECHOSCP", host="127.0.0.1", port=scp.port)
        wrong = DicomNode.objects.create(name="wrong-aet", ae_title="NOTHERE", host="127.0.0.1", port=scp.port)
        page = staff.get(reverse("admin:export_dicomnode_changelist"))
        assert page.status_code == 200 and b"receiver" in page.content and b"wrong-aet" in page.content
        response = staff.post(reverse("admin:export_dicomnode_changelist"),
                              {"action": "echo_nodes", "_selected_action": [up.pk, wrong.pk]}, follow=True)
    finally:
        scp.stop(grace=2)
    messages = [str(m) for m in response.context["messages"]]
    assert "receiver: C-ECHO status 0x0000" in messages
    assert any(m.startswith("wrong-aet: ") and "0x0000" not in m for m in messages), messages
