from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "dicomflow.projects"
    label = "projects"
