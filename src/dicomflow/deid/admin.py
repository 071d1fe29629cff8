"""Admin page of the re-identification audit trail: view only, never edited."""

from django.contrib import admin

from dicomflow.deid.models import ReidentificationAudit


@admin.register(ReidentificationAudit)
class ReidentificationAuditAdmin(admin.ModelAdmin):
    list_display = ["at", "username", "project", "allowed", "files_in", "files_out", "what"]
    list_filter = ["allowed", "project"]
    search_fields = ["username", "what", "purpose"]
    readonly_fields = [f.name for f in ReidentificationAudit._meta.fields]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
