"""Templates that ran a command given as an argv list (before the operator's registry) keep their
place but cannot run: their ``command`` becomes a marker no registry name can take, and the argv and
environment they carried are dropped. A job with such a template fails with "this template runs a
command the operator has not registered" until an editor names a registered command."""

from django.db import migrations

UNREGISTERED_COMMAND = "(unregistered)"  # dicomflow.processing.registry.UNREGISTERED_COMMAND


def mark(apps, schema_editor):
    Template = apps.get_model("processing", "Template")
    for row in Template.objects.filter(definition__processor="external.command"):
        params = dict((row.definition or {}).get("parameters") or {})
        if not any(k in params for k in ("env", "argv", "cwd")) and isinstance(params.get("command"), str):
            continue  # already names a command
        for key in ("env", "argv", "cwd"):
            params.pop(key, None)
        if not isinstance(params.get("command"), str):
            params["command"] = UNREGISTERED_COMMAND
        Template.objects.filter(pk=row.pk).update(definition={**row.definition, "parameters": params})


class Migration(migrations.Migration):
    dependencies = [("processing", "0003_long_jobs")]
    operations = [migrations.RunPython(mark, migrations.RunPython.noop)]
