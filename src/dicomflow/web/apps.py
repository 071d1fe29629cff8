from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "dicomflow.web"
    label = "web"
