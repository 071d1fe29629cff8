from django.apps import AppConfig


class ExportConfig(AppConfig):
    name = "dicomflow.export"
    label = "export"
    verbose_name = "Export"
