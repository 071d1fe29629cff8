"""URLs of the processing desk (appended to the web app's URL list)."""

from django.urls import path

from dicomflow.web.desk import definition_views, intake_views, job_views, log_views, quality_views, series_views

NAME = "<path:name>"

urlpatterns = [
    path("processing/series/", series_views.series_list, name="desk-series"),
    path("processing/series/status.json", series_views.series_status, name="desk-series-status"),
    path("processing/series/send/", series_views.send, name="desk-series-send"),
    path("processing/series/<str:uid>/why/", series_views.why, name="desk-series-why"),
    path("jobs/", job_views.job_list, name="desk-jobs"),
    path("jobs/<int:job_id>/", job_views.job_detail, name="desk-job"),
    path("jobs/<int:job_id>/status.json", job_views.job_status, name="desk-job-status"),
    path("jobs/<int:job_id>/qc/<int:k>.png", job_views.qc_picture, name="desk-job-qc-png"),
    path("jobs/<int:job_id>/retry/", job_views.retry, name="desk-job-retry"),
    path("jobs/<int:job_id>/cancel/", job_views.cancel, name="desk-job-cancel"),
    path("jobs/<int:job_id>/approve/", job_views.approve, name="desk-job-approve"),
    path("jobs/<int:job_id>/reject/", job_views.reject, name="desk-job-reject"),
    path("jobs/<int:job_id>/results.zip", job_views.download, name="desk-job-download"),
    path("jobs/<int:job_id>/rating/", quality_views.rate, name="desk-job-rate"),
    path("statistics/", quality_views.statistics, name="desk-statistics"),
    path(f"processing/templates/{NAME}/structures/eclipse/", quality_views.import_eclipse, name="desk-template-eclipse"),
    path("processing/logs/", log_views.log_list, name="desk-logs"),
    path("processing/templates/", definition_views.template_list, name="desk-templates"),
    path("processing/templates/new/", definition_views.template_form, name="desk-template-new"),
    path(f"processing/templates/{NAME}/delete/", definition_views.template_delete, name="desk-template-delete"),
    path(f"processing/templates/{NAME}/", definition_views.template_form, name="desk-template"),
    path("processing/rulesets/", definition_views.ruleset_list, name="desk-rulesets"),
    path("processing/rulesets/new/", definition_views.ruleset_form, name="desk-ruleset-new"),
    path(f"processing/rulesets/{NAME}/delete/", definition_views.ruleset_delete, name="desk-ruleset-delete"),
    path(f"processing/rulesets/{NAME}/", definition_views.ruleset_form, name="desk-ruleset"),
    path("datastore/", intake_views.datastore, name="desk-datastore"),
    path("datastore/add/", intake_views.datastore_add, name="desk-datastore-add"),
    path("datastore/<int:folder_id>/toggle/", intake_views.datastore_toggle, name="desk-datastore-toggle"),
    path("uploads/zip/", intake_views.zip_list, name="desk-zip"),
    path("uploads/zip/process/", intake_views.zip_process, name="desk-zip-process"),
    path("uploads/zip/progress/", intake_views.zip_progress, name="desk-zip-progress"),
    path("uploads/zip/progress.json", intake_views.zip_progress_json, name="desk-zip-progress-json"),
    path("uploads/zip/<int:upload_id>/", intake_views.zip_result, name="desk-zip-result"),
]
