"""DicomNode moves here from intake: state only, the table ``intake_dicomnode`` and its rows stay.

The content type of the old model is renamed too, so permissions already granted on DICOM nodes
(``intake.change_dicomnode`` …) follow the model instead of being orphaned.
"""

from django.db import migrations, models


def move_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="export", model="dicomnode").exists():
        ContentType.objects.using(db).filter(app_label="intake", model="dicomnode").update(app_label="export")


def restore_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="intake", model="dicomnode").exists():
        ContentType.objects.using(db).filter(app_label="export", model="dicomnode").update(app_label="intake")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("intake", "0004_uploadsession_uploadfile"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="DicomNode",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=64, unique=True)),
                        ("ae_title", models.CharField(max_length=16)),
                        ("host", models.CharField(max_length=255)),
                        ("port", models.PositiveIntegerField()),
                        ("our_ae_title", models.CharField(default="DICOMFLOW", help_text="Calling AE title we use.", max_length=16)),
                        ("enabled", models.BooleanField(default=True)),
                    ],
                    options={
                        "verbose_name": "DICOM node",
                        "ordering": ["name"],
                        "db_table": "intake_dicomnode",
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_type, restore_content_type),
    ]
