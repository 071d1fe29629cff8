"""One import session per import: ``import_finished`` is sent exactly once, with what it touched,
for a command-line import and for one C-STORE association (both receive paths), and the analysis
and the rules follow from that one signal."""

from __future__ import annotations

import pytest

from dicomflow.catalog.signals import import_finished
from dicomflow.testing import synth


@pytest.fixture
def heard():
    """Every ``import_finished`` sent while the test runs."""
    received = []

    def listener(sender, imported, **kwargs):
        received.append(imported)

    import_finished.connect(listener, dispatch_uid="test-import-session")
    yield received
    import_finished.disconnect(dispatch_uid="test-import-session")


@pytest.mark.django_db
def test_cli_import_signals_once(tmp_path, heard, monkeypatch, capsys):
    from dicomflow.catalog.models import Series, Study
    from dicomflow.commands import _common
    from dicomflow.commands.importing import import_files
    from dicomflow.intake.models import ImportRun, SourceKind

    monkeypatch.setattr(_common, "_django_ready", True)  # the test database is set up already
    ct = synth.write_image_series(tmp_path / "ct", n_slices=5, rows=8, cols=8, seed=41)
    (tmp_path / "ct" / "notes.txt").write_text("not DICOM")
    synth.write_image_series(tmp_path / "ct" / "mr", modality="MR", n_slices=2, rows=8, cols=8, seed=42)
    # a batch size of 2 records the 7 files in several batches: still one session, one signal
    monkeypatch.setattr("django.conf.settings.DICOMFLOW_IMPORT_BATCH", 2)

    import_files([tmp_path / "ct"], as_json=True, workers=1, quiet=True, analyse_now=False)

    assert '"instances_new": 7' in capsys.readouterr().out
    assert len(heard) == 1
    imported = heard[0]
    run = ImportRun.objects.get()
    assert (imported.import_run_id, imported.source_kind) == (run.id, SourceKind.CLI)
    assert run.finished_at is not None
    assert (imported.files_seen, imported.instances_new) == (8, 7)
    assert imported.series_ids == set(Series.objects.values_list("pk", flat=True)) and len(imported.series_ids) == 2
    assert imported.study_ids == set(Study.objects.values_list("pk", flat=True))
    assert imported.analyse
    assert Series.objects.filter(series_instance_uid=ct.series_uid).exists()


@pytest.mark.django_db
def test_listeners_queue_analysis_and_rules_from_the_one_signal(tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    """The catalog queues the touched studies' analysis (only when asked), processing the rules
    (only when something is new): each listener acts once per session."""
    from dicomflow.catalog import tasks as catalog_tasks
    from dicomflow.intake.services import import_paths
    from dicomflow.processing import tasks as processing_tasks

    analysed, evaluated = [], []
    monkeypatch.setattr(catalog_tasks.analyse_studies, "delay", lambda ids: analysed.append(ids))
    monkeypatch.setattr(processing_tasks.evaluate_imported, "apply_async", lambda **kw: evaluated.append(kw))
    synth.write_image_series(tmp_path / "ct", n_slices=3, rows=8, cols=8, seed=43)

    with django_capture_on_commit_callbacks(execute=True):
        first = import_paths([tmp_path / "ct"], workers=1)
    assert analysed == [sorted(first.study_ids)] and len(evaluated) == 1

    with django_capture_on_commit_callbacks(execute=True):
        import_paths([tmp_path / "ct"], workers=1, analyse=False)  # all duplicates, analysis left to the caller
    assert len(analysed) == 1 and len(evaluated) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom"])
def test_one_cstore_association_signals_once(tmp_path, heard, fast_path):
    from dicomflow.catalog.models import Instance
    from dicomflow.export.scu import send_instances
    from dicomflow.intake.models import ImportRun, SourceKind
    from dicomflow.intake.network.common import RemoteNode
    from dicomflow.intake.network.scp import StorageSCP

    ct = synth.write_image_series(tmp_path / "ct", n_slices=6, rows=8, cols=8, seed=44 + fast_path)
    scp = StorageSCP("SESSIONSCP", 0, [], host="127.0.0.1", batch_size=2, flush_interval=0.05,
                     fast_path=fast_path).start()
    try:
        report = send_instances(RemoteNode("SESSIONSCP", "127.0.0.1", scp.port, "SENDER"), ct.paths, timeout=30)
        assert report.sent == 6
    finally:
        scp.stop(grace=5)  # the association ended before: its session is finished, stop adds nothing

    assert len(heard) == 1, heard
    imported = heard[0]
    run = ImportRun.objects.get()
    assert (imported.import_run_id, imported.source_kind, run.source_kind) == (run.id, SourceKind.DICOM, SourceKind.DICOM)
    assert (imported.files_seen, imported.instances_new, run.instances_new) == (6, 6, 6)
    assert imported.series_ids == {Instance.objects.values_list("series_id", flat=True).distinct().get()}
    assert len(imported.study_ids) == 1 and run.finished_at is not None
