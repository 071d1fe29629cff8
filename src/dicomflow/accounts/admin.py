"""Admin pages of accounts: the audit log (read-only) and API keys (read, revoke).

Nothing here writes a row itself: the audit log is append-only (no add, change or delete), and
revoking a key goes through ``services.revoke_api_key`` (which audits it). Keys are created by
their owners on the web page ``/token/`` or with ``dicomflow apikey create``.
"""

from __future__ import annotations

from django.contrib import admin, messages

from dicomflow.accounts import services
from dicomflow.accounts.models import ApiKey, AuditEntry
from dicomflow.errors import DicomflowError


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "username", "action", "project", "object", "outcome", "detail")
    list_filter = ("action", "outcome", "project")
    search_fields = ("username", "project", "object")
    date_hierarchy = "at"
    readonly_fields = list_display + ("user",)
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created", "expiry_date", "last_used_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = list_display
    fields = readonly_fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # the list's Revoke action needs "change"; a key's own page is read-only (nothing to save)
        return obj is None and super().has_change_permission(request)

    @admin.action(description="Revoke the selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        done = 0
        for key in queryset:
            try:
                services.revoke_api_key(request.user, key.prefix)
                done += 1
            except DicomflowError as exc:
                self.message_user(request, f"{key.prefix}: {exc}", messages.ERROR)
        self.message_user(request, f"{done} API key(s) revoked.", messages.SUCCESS)
