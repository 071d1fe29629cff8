"""Re-identifications are audited in the one audit log (accounts.AuditEntry): earlier rows move there."""

from django.db import migrations


def copy_to_audit_log(apps, schema_editor):
    Old = apps.get_model("deid", "ReidentificationAudit")
    AuditEntry = apps.get_model("accounts", "AuditEntry")
    for row in Old.objects.select_related("project").order_by("id").iterator():
        entry = AuditEntry.objects.create(
            user_id=row.user_id, username=row.username or "(unknown user)", action="reidentify",
            project=row.project.key, object=f"{row.files_in} file(s)",
            outcome="ok" if row.allowed else "denied",
            detail=f"{row.files_out} of {row.files_in} file(s) re-identified, {row.values_restored} value(s) restored"
            if row.allowed else "needs the Re-identifier role in the project",
        )
        AuditEntry.objects.filter(pk=entry.pk).update(at=row.at)  # keep when it happened


class Migration(migrations.Migration):

    dependencies = [
        ("deid", "0001_initial"),
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(copy_to_audit_log, migrations.RunPython.noop),
        migrations.DeleteModel(name="ReidentificationAudit"),
    ]
