"""Processing jobs become ``dicomflow.progress.LongJob``s: ``current_stage`` is ``stage`` (data kept),
done/total of the stage running are added, and "waiting_qc" is the shared "waiting"."""

from django.db import migrations, models


def forwards(apps, schema_editor):
    apps.get_model("processing", "Job").objects.filter(status="waiting_qc").update(status="waiting")


def backwards(apps, schema_editor):
    apps.get_model("processing", "Job").objects.filter(status="waiting").update(status="waiting_qc")


class Migration(migrations.Migration):
    dependencies = [("processing", "0002_builtin_templates")]

    operations = [
        migrations.RenameField("job", "current_stage", "stage"),
        migrations.RunPython(forwards, backwards),
        migrations.AddField(
            model_name='job',
            name='done',
            field=models.IntegerField(default=0, help_text='Work done in the current stage.'),
        ),
        migrations.AddField(
            model_name='job',
            name='total',
            field=models.IntegerField(default=0, help_text='Work of the current stage (0: not known yet).'),
        ),
        migrations.AlterField(
            model_name='job',
            name='error',
            field=models.TextField(blank=True, default='', help_text='Why it failed (no identifying values).'),
        ),
        migrations.AlterField(
            model_name='job',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('running', 'Running'), ('waiting', 'Waiting for quality control'), ('finished', 'Finished'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='pending', max_length=16),
        ),
    ]
