"""DicomNode now lives in ``dicomflow.export`` (export.0001): forget it here without dropping its table."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("intake", "0005_long_jobs"),
        ("export", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel(name="DicomNode")],
        ),
    ]
