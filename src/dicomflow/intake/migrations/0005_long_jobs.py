"""Intake's long jobs become ``dicomflow.progress.LongJob``s: one status vocabulary, stage, done/total,
started/finished, error. Columns are renamed (data kept) and old status values mapped to new ones."""

from django.db import migrations, models

# old status (per kind) → (new status, stage); None keeps the stage
ZIP_STATUS = {"in_progress": "running", "completed": "finished"}
SESSION_STATUS = {"receiving": ("waiting", "receive"), "queued": ("pending", "import"),
                  "importing": ("running", "import"), "completed": ("finished", "import"),
                  "failed": ("failed", "import"), "cancelled": ("cancelled", "receive")}
INTAKE_STATUS = {"waiting": ("waiting", ""), "copying": ("running", "copy"), "copied": ("pending", "import"),
                 "importing": ("running", "import"), "imported": ("finished", "import"), "failed": ("failed", None)}
ZIP_SPANS = {"initialise": (0, 5), "extract": (5, 10), "import": (10, 90), "clean_up": (90, 95), "finalise": (95, 100)}


def forwards(apps, schema_editor):
    ZipUpload = apps.get_model("intake", "ZipUpload")
    for upload in ZipUpload.objects.all():
        upload.status = ZIP_STATUS.get(upload.status, upload.status)
        low, high = ZIP_SPANS.get(upload.stage, (0, 100))  # the overall percent, as done/total of the stage
        upload.done, upload.total = max(0, min(upload.percent, high) - low), high - low
        upload.save(update_fields=["status", "done", "total"])
    UploadSession = apps.get_model("intake", "UploadSession")
    for old, (new, stage) in SESSION_STATUS.items():
        UploadSession.objects.filter(status=old).update(status=new, stage=stage)
    FolderIntake = apps.get_model("intake", "FolderIntake")
    for old, (new, stage) in INTAKE_STATUS.items():
        rows = FolderIntake.objects.filter(status=old)
        if stage is None:  # failed: in the copy, unless a copy exists
            rows.filter(copy_path="").update(status=new, stage="copy")
            rows.exclude(copy_path="").update(status=new, stage="import")
        else:
            rows.update(status=new, stage=stage)


def backwards(apps, schema_editor):
    ZipUpload = apps.get_model("intake", "ZipUpload")
    back = {v: k for k, v in ZIP_STATUS.items()}
    for upload in ZipUpload.objects.all():
        low, high = ZIP_SPANS.get(upload.stage, (0, 100))
        upload.status = back.get(upload.status, upload.status)
        upload.percent = 100 if upload.status == "completed" else (
            low + (high - low) * upload.done // upload.total if upload.total else low)
        upload.save(update_fields=["status", "percent"])
    UploadSession = apps.get_model("intake", "UploadSession")
    for old, (new, stage) in SESSION_STATUS.items():
        UploadSession.objects.filter(status=new, stage=stage).update(status=old)
    FolderIntake = apps.get_model("intake", "FolderIntake")
    for old, (new, stage) in INTAKE_STATUS.items():
        rows = FolderIntake.objects.filter(status=new)
        (rows if stage is None else rows.filter(stage=stage)).update(status=old)


class Migration(migrations.Migration):
    dependencies = [("intake", "0004_uploadsession_uploadfile")]

    operations = [
        migrations.RenameField("zipupload", "error_message", "error"),
        migrations.RenameField("uploadsession", "import_done", "done"),
        migrations.RenameField("uploadsession", "import_total", "total"),
        migrations.RenameField("uploadsession", "error_message", "error"),
        migrations.RenameField("folderintake", "claimed_at", "started_at"),
        migrations.RenameField("folderintake", "imported_at", "finished_at"),
        migrations.RenameField("folderintake", "error_message", "error"),
        migrations.AddField(
            model_name='folderintake',
            name='done',
            field=models.IntegerField(default=0, help_text='Work done in the current stage.'),
        ),
        migrations.AddField(
            model_name='folderintake',
            name='stage',
            field=models.CharField(blank=True, choices=[('copy', 'Copy into the datastore'), ('import', 'Import')], default='', max_length=24),
        ),
        migrations.AddField(
            model_name='folderintake',
            name='total',
            field=models.IntegerField(default=0, help_text='Work of the current stage (0: not known yet).'),
        ),
        migrations.AddField(
            model_name='uploadsession',
            name='stage',
            field=models.CharField(blank=True, choices=[('receive', 'Receive the files'), ('import', 'Import')], default='receive', max_length=24),
        ),
        migrations.AddField(
            model_name='uploadsession',
            name='started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='zipupload',
            name='done',
            field=models.IntegerField(default=0, help_text='Work done in the current stage.'),
        ),
        migrations.AddField(
            model_name='zipupload',
            name='total',
            field=models.IntegerField(default=0, help_text='Work of the current stage (0: not known yet).'),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RemoveField(
            model_name='zipupload',
            name='percent',
        ),
        migrations.AlterField(
            model_name='folderintake',
            name='error',
            field=models.TextField(blank=True, default='', help_text='Why it failed (no identifying values).'),
        ),
        migrations.AlterField(
            model_name='folderintake',
            name='status',
            field=models.CharField(choices=[('pending', 'Import queued'), ('running', 'In progress'), ('waiting', 'Waiting until stable'), ('finished', 'Imported'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='waiting', max_length=16),
        ),
        migrations.AlterField(
            model_name='uploadsession',
            name='done',
            field=models.IntegerField(default=0, help_text='Work done in the current stage.'),
        ),
        migrations.AlterField(
            model_name='uploadsession',
            name='error',
            field=models.TextField(blank=True, default='', help_text='Why it failed (no identifying values).'),
        ),
        migrations.AlterField(
            model_name='uploadsession',
            name='status',
            field=models.CharField(choices=[('pending', 'Queued for import'), ('running', 'Importing'), ('waiting', 'Receiving'), ('finished', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='waiting', max_length=16),
        ),
        migrations.AlterField(
            model_name='uploadsession',
            name='total',
            field=models.IntegerField(default=0, help_text='Work of the current stage (0: not known yet).'),
        ),
        migrations.AlterField(
            model_name='zipupload',
            name='error',
            field=models.TextField(blank=True, default='', help_text='Why it failed (no identifying values).'),
        ),
        migrations.AlterField(
            model_name='zipupload',
            name='stage',
            field=models.CharField(blank=True, choices=[('waiting', 'Waiting'), ('initialise', 'Initialise'), ('extract', 'Extract'), ('import', 'Import'), ('clean_up', 'Clean up'), ('finalise', 'Finalise'), ('done', 'Done')], default='waiting', max_length=24),
        ),
        migrations.AlterField(
            model_name='zipupload',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('running', 'In progress'), ('waiting', 'Waiting'), ('finished', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='pending', max_length=16),
        ),
    ]
