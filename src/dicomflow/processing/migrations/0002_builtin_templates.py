"""Load the shipped template ``ct-body-lungs`` and the default ruleset (idempotent, never overwrites)."""

from django.db import migrations


def load(apps, schema_editor):
    from dicomflow.core.rules import builtin_templates, default_rulesets

    Template = apps.get_model("processing", "Template")
    Ruleset = apps.get_model("processing", "Ruleset")
    for name, template in builtin_templates().items():
        Template.objects.get_or_create(name=name, defaults={"definition": template.to_dict(), "builtin": True})
    for order, ruleset in enumerate(default_rulesets()):
        Ruleset.objects.get_or_create(
            name=ruleset.name,
            defaults={"definition": ruleset.to_dict(), "enabled": ruleset.enabled, "order": order, "builtin": True},
        )


class Migration(migrations.Migration):
    dependencies = [("processing", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
