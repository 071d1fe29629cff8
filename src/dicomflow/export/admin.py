"""Admin of export destinations: DICOM nodes (configuration rows), with a C-ECHO check."""

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

    @admin.action(description="Check with C-ECHO")
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
