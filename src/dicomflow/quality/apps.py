from django.apps import AppConfig


class QualityConfig(AppConfig):
    name = "dicomflow.quality"
    label = "quality"
    verbose_name = "RT quality"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dicomflow.quality import signals

        signals.connect()
