"""DicomNode moved from intake to export: rows, table and granted permissions survive the move."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("intake", "0004_uploadsession_uploadfile"), ("export", None)]


@pytest.mark.django_db(transaction=True)
def test_dicom_nodes_and_their_content_type_survive_the_move():
    executor = MigrationExecutor(connection)
    old = executor.migrate(BEFORE).apps  # the project as it was before the move
    old.get_model("intake", "DicomNode").objects.create(name="pacs", ae_title="PACS", host="10.0.0.7", port=104)
    ContentType = old.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="export").delete()
    old_type, _ = ContentType.objects.get_or_create(app_label="intake", model="dicomnode")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from django.contrib.contenttypes.models import ContentType as CurrentContentType

    from dicomflow.export.models import DicomNode

    node = DicomNode.objects.get()
    assert (node.name, node.ae_title, node.host, node.port, node.enabled) == ("pacs", "PACS", "10.0.0.7", 104, True)
    assert DicomNode._meta.db_table == "intake_dicomnode"
    CurrentContentType.objects.clear_cache()
    moved = CurrentContentType.objects.get_for_model(DicomNode)
    assert moved.pk == old_type.pk and moved.app_label == "export"
    assert not CurrentContentType.objects.filter(app_label="intake", model="dicomnode").exists()
