"""REST API routes; OpenAPI schema at /api/schema/, browsable docs at /api/docs/.

Catalog: ``patients/``, ``studies/<uid>/`` (+ ``rt-tree/``), ``series/<uid>/`` (+ ``download/``),
``instances/<uid>/``; ``imports/``; ``projects/``; resumable ``uploads/`` (+ ``files/<n>/``, ``finalize/``);
processing (``processing_views``): ``jobs/`` (+ ``retry|cancel|approve|reject|override/``, ``results/``,
``log/``), ``templates/``, ``rulesets/``, ``rules/dry-run/``, ``audit/``;
``auth/token/`` gives a new API key for a username and password (for the SDK's ``Client.login``).
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from dicomflow.api import processing_views, views

router = DefaultRouter()
router.register("patients", views.PatientViewSet, basename="patient")
router.register("studies", views.StudyViewSet, basename="study")
router.register("series", views.SeriesViewSet, basename="series")
router.register("instances", views.InstanceViewSet, basename="instance")
router.register("imports", views.ImportRunViewSet, basename="importrun")
router.register("uploads", views.UploadSessionViewSet, basename="upload")
router.register("jobs", processing_views.JobViewSet, basename="job")
router.register("templates", processing_views.TemplateViewSet, basename="template")
router.register("rulesets", processing_views.RulesetViewSet, basename="ruleset")
router.register("audit", processing_views.AuditViewSet, basename="audit")
router.register("projects", views.ProjectViewSet, basename="project")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("rules/dry-run/", processing_views.RulesDryRunView.as_view(), name="rules-dry-run"),
    path("auth/token/", views.ApiKeyLoginView.as_view(), name="api-token"),
    path("", include(router.urls)),
]
