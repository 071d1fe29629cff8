"""REST API routes; OpenAPI schema at /api/schema/, browsable docs at /api/docs/.

Catalog: ``patients/``, ``studies/<uid>/`` (+ ``rt-tree/``), ``series/<uid>/`` (+ ``download/``),
``instances/<uid>/``; ``imports/``; ``projects/``; resumable ``uploads/`` (+ ``files/<n>/``, ``finalize/``);
processing (``processing_views``): ``jobs/`` (+ ``retry|cancel|approve|reject|override/``, ``results/``,
``log/``), ``templates/``, ``rulesets/``, ``rules/dry-run/``, ``audit/``;
RT quality (``quality_views``): ``jobs/<id>/rating/`` (GET, PUT), ``jobs/<id>/comparisons/``, ``ratings.csv``,
``statistics/``, ``templates/<name>/structures/eclipse/`` (Eclipse XML);
``qr/`` (``nodes/``, ``find/``, ``series/``, ``retrieve/``: Query/Retrieve from a configured DICOM node);
``auth/token/`` gives a new API key for a username and password (for the SDK's ``Client.login``).
Research projects under ``projects/<key>/``: ``staging/`` (+ ``<id>/``), ``subjects/`` (+ ``<id>/``, ``<id>/events/``,
``<id>/events/<id>/slots/``), ``slots/<id>/`` (+ ``link/``), ``sanity-overrides/``, ``members/``
(+ ``<user>/``), ``series/<uid>/identified/`` (re-identified ZIP).
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from dicomflow.api import processing_views, project_views, qr_views, quality_views, views

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

PROJECT = "projects/<str:key>/"
project_urlpatterns = [
    path(PROJECT + "staging/", project_views.StagingView.as_view(), name="project-staging"),
    path(PROJECT + "staging/<int:job_id>/", project_views.StagingJobView.as_view(), name="project-staging-job"),
    path(PROJECT + "subjects/", project_views.SubjectListView.as_view(), name="project-subjects"),
    path(PROJECT + "subjects/<int:subject_id>/", project_views.SubjectDetailView.as_view(), name="project-subject"),
    path(PROJECT + "subjects/<int:subject_id>/events/", project_views.EventListView.as_view(), name="project-events"),
    path(PROJECT + "subjects/<int:subject_id>/events/<int:event_id>/slots/", project_views.SlotListView.as_view(),
         name="project-slots"),
    path(PROJECT + "slots/<int:slot_id>/", project_views.SlotDetailView.as_view(), name="project-slot"),
    path(PROJECT + "slots/<int:slot_id>/link/", project_views.SlotLinkView.as_view(), name="project-slot-link"),
    path(PROJECT + "sanity-overrides/", project_views.SanityOverrideView.as_view(), name="project-sanity-overrides"),
    path(PROJECT + "members/", project_views.MemberListView.as_view(), name="project-members"),
    path(PROJECT + "members/<str:username>/", project_views.MemberDetailView.as_view(), name="project-member"),
    path(PROJECT + "series/<str:series_uid>/identified/", project_views.IdentifiedSeriesView.as_view(),
         name="project-series-identified"),
]

urlpatterns = project_urlpatterns + [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("rules/dry-run/", processing_views.RulesDryRunView.as_view(), name="rules-dry-run"),
    path("auth/token/", views.ApiKeyLoginView.as_view(), name="api-token"),
    path("jobs/<int:job_id>/rating/", quality_views.JobRatingView.as_view(), name="job-rating"),
    path("jobs/<int:job_id>/comparisons/", quality_views.JobComparisonsView.as_view(), name="job-comparisons"),
    path("ratings.csv", quality_views.RatingsCsvView.as_view(), name="ratings-csv"),
    path("statistics/", quality_views.StatisticsView.as_view(), name="statistics"),
    path("templates/<str:name>/structures/eclipse/", quality_views.EclipseStructuresView.as_view(),
         name="template-eclipse-structures"),
    path("qr/nodes/", qr_views.QueryNodesView.as_view(), name="qr-nodes"),
    path("qr/find/", qr_views.FindView.as_view(), name="qr-find"),
    path("qr/series/", qr_views.SeriesView.as_view(), name="qr-series"),
    path("qr/retrieve/", qr_views.RetrieveView.as_view(), name="qr-retrieve"),
    path("", include(router.urls)),
]
