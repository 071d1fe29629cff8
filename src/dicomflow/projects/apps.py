from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "dicomflow.projects"
    label = "projects"

    def ready(self):
        from dicomflow.projects import uploads

        uploads.connect()  # uploads into a project are staged (and processed) once imported
