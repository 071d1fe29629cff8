"""Routes of the research pages (included at the site root by ``dicomflow.web.urls``)."""

from django.urls import path

from dicomflow.web.research import context, lookup, subjects, uploader

urlpatterns = [
    path("projects/switch/", context.switch, name="research-switch"),
    path("projects/session.json", uploader.session_state, name="research-session"),
    path("projects/reauth/", uploader.reauthenticate, name="research-reauth"),
    path("projects/<str:key>/subjects/", subjects.subjects, name="research-subjects"),
    path("projects/<str:key>/upload/", uploader.uploader, name="research-upload"),
    path("projects/<str:key>/upload/override/", uploader.override, name="research-upload-override"),
    path("projects/<str:key>/upload/finish/", uploader.finish, name="research-upload-finish"),
    path("projects/<str:key>/lookup/", lookup.lookup, name="research-lookup"),
    path("projects/<str:key>/lookup/suggest.json", lookup.suggest, name="research-lookup-suggest"),
    path("projects/<str:key>/lookup/series.json", lookup.study_series, name="research-lookup-series"),
    path("projects/<str:key>/lookup/stage/", lookup.stage, name="research-lookup-stage"),
    path("projects/<str:key>/lookup/pull/", lookup.pacs_pull, name="research-lookup-pull"),
    path("projects/<str:key>/staging/<int:job>.json", lookup.staging, name="research-staging"),
]
