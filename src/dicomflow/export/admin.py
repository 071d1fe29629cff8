"""Admin of export destinations: DICOM nodes (configuration rows), with a C-ECHO check.

A DICOM node is where templates may send data (exports, ``remote.dicom_node`` processing): like the
operator's registry of commands and endpoints, only superusers add, change or delete nodes — staff
holding the model permissions may look at them and check them with C-ECHO, nothing more."""

from django.contrib import admin, messages

from dicomflow.errors import DicomflowError
from dicomflow.export.models import DicomNode


@admin.register(DicomNode)
class DicomNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "ae_title", "host", "port", "our_ae_title", "enabled", "qr_user", "intake_filter"]
    raw_id_fields = ["qr_user"]
    list_filter = ["enabled"]
    search_fields = ["name", "ae_title", "host"]
    actions = ["echo_nodes"]

    def has_add_permission(self, request):
        return bool(request.user.is_active and request.user.is_superuser)

    def has_change_permission(self, request, obj=None):
        return bool(request.user.is_active and request.user.is_superuser)

    def has_delete_permission(self, request, obj=None):
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.action(description="Check with C-ECHO", permissions=["view"])
    def echo_nodes(self, request, queryset):
        from dicomflow.export.scu import echo

        for node in queryset:
            try:
                status = echo(node, timeout=10.0)
            except DicomflowError as exc:
                self.message_user(request, f"{node.name}: {exc}", messages.ERROR)
                continue
            level = messages.SUCCESS if status == 0 else messages.WARNING
            self.message_user(request, f"{node.name}: C-ECHO status 0x{status:04X}", level)
