"""`dicomflow import` starts its workers before typer parses the command line (commands.early)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomflow.commands import early
from dicomflow.testing import synth

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["a", "b"], early.ImportArgs(["a", "b"])),
        (["a", "--json", "-q", "--workers", "3"], early.ImportArgs(["a"], workers=3, as_json=True, quiet=True)),
        (["--workers=2", "--analyse", "a"], early.ImportArgs(["a"], workers=2, analyse=True)),
        (["--quiet", "--", "-odd-name"], early.ImportArgs(["-odd-name"], quiet=True)),
        (["a", "--help"], None),
        (["a", "--bogus"], None),
        (["a", "--workers", "many"], None),
        (["a", "--workers", "\u00b2"], None),  # a digit to str.isdigit, not to int(): typer reports it
        (["--json"], None),
    ],
)
def test_only_plain_import_command_lines_start_early(args, expected):
    assert early.parse_import_args(args) == expected


@pytest.mark.parametrize(
    "args",
    [["a", "b"], ["a", "--json", "-q", "--workers", "3"], ["--workers=2", "--analyse", "a"], ["--quiet", "--", "-odd-name"],
     ["--json", "x", "--quiet", "y", "--workers", "0"]],
)
def test_plain_command_lines_give_the_values_typer_gives(args):
    """typer is the oracle of the early parser: same command line, same values for the command."""
    import typer.main

    from dicomflow.cli import build_app

    command = typer.main.get_command(build_app()).commands["import"]
    params = command.make_context("import", list(args)).params
    ours = early.parse_import_args(args)
    assert ours is not None
    assert [str(p) for p in params["paths"]] == ours.paths
    assert (params["as_json"], params["workers"], params["quiet"], params["analyse_now"]) == (
        ours.as_json, ours.workers, ours.quiet, ours.analyse,
    )


def test_early_ingestion_is_taken_only_for_the_same_paths(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()  # one worker: the ingestion reads lazily, so nothing is stored by this test
    early.start_from_argv(["import", str(folder), "--workers", "1"])
    first = early._early[2]
    assert early.take([tmp_path / "elsewhere"], 1) is None  # typer saw something else: not used...
    assert not first.work_dir.exists()  # ...and closed
    assert early.take([folder], 1) is None  # and gone

    early.start_from_argv(["import", str(folder) + "/", "--workers", "1"])
    taken = early.take([Path(folder)], 1)
    assert taken is not None and taken is not first
    taken.close()
    early.start_from_argv(["import", str(tmp_path / "missing")])
    assert early._early is None  # a missing path: the command reports it, nothing starts


def test_cli_with_options_early_and_refused(tmp_path):
    synth.write_image_series(tmp_path / "ct", n_slices=3, rows=16, cols=16, seed=5)
    env = dict(os.environ, DICOMFLOW_HOME=str(tmp_path / "home"))
    env.pop("DATABASE_URL", None)
    ok = subprocess.run([DICOMFLOW, "import", str(tmp_path / "ct"), "--workers", "2", "-q", "--json"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["instances_new"] == 3
    # Without --json: the human summary, as typer's path prints it.
    human = subprocess.run([DICOMFLOW, "import", str(tmp_path / "ct"), "-q"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("3 files: 0 new, 3 duplicate")
    refused = subprocess.run([DICOMFLOW, "import", str(tmp_path / "ct"), "--no-such-option", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert not any((tmp_path / "home" / "work").iterdir())  # nothing left behind by an early start


def test_direct_run_keeps_the_exit_status_and_json_error(tmp_path, capsys):
    """The command's own failures (typer.Exit) become the same exit status without typer's runner."""
    with pytest.raises(SystemExit) as stopped:
        early.run_import(early.ImportArgs([str(tmp_path / "gone")], as_json=True))
    assert stopped.value.code == 1
    assert json.loads(capsys.readouterr().out) == {"error": f"no such file or folder: {tmp_path / 'gone'}"}


def _interrupt_when(proc, ready, timeout=60.0):
    """Send Ctrl-C (SIGINT to the whole process group, as a terminal does) once ``ready()``."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # hung: do not leave it behind
        proc.communicate()
        pytest.fail("the import hung after Ctrl-C")


@pytest.mark.parametrize("moment", ["workers_storing", "catalog_writing"])
def test_ctrl_c_stops_the_workers_and_leaves_nothing_behind(tmp_path, moment):
    """Ctrl-C while the workers run before Django is up, or while the catalog is written: the command
    ends (no hang on the pool's queue lock), no worker survives, and the work folder is removed."""
    import signal
    import zipfile

    ct = synth.write_image_series(tmp_path / "ct", n_slices=400, rows=64, cols=64, seed=11)
    archive = tmp_path / "ct.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # an archive: its extracted members sit in the work folder
        for p in ct.paths:
            zf.write(p, p.name)
    home = tmp_path / "home"
    env = dict(os.environ, DICOMFLOW_HOME=str(home), DICOMFLOW_FSYNC="batch")
    env.pop("DATABASE_URL", None)
    store, work = home / "store", home / "work"

    def stored() -> bool:
        return store.is_dir() and any(store.rglob("*.dcm"))

    def catalogued() -> bool:
        return (home / "dicomflow.sqlite3-wal").exists() and stored()

    proc = subprocess.Popen(
        [DICOMFLOW, "import", str(archive), "--workers", "2", "-q", "--json"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    _out, err = _interrupt_when(proc, stored if moment == "workers_storing" else catalogued)
    assert proc.returncode not in (None, 0, -signal.SIGKILL), err[-2000:]
    left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert left == []  # no worker process survives its parent
    assert list(work.iterdir()) == []  # the extracted archive is gone


def test_failed_start_up_after_the_early_start_closes_the_ingestion(tmp_path):
    """The database cannot be reached (Django's start-up fails after the workers started): the
    command fails, and the workers and the extracted archive do not outlive it."""
    import zipfile

    ct = synth.write_image_series(tmp_path / "ct", n_slices=20, rows=16, cols=16, seed=12)
    archive = tmp_path / "ct.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in ct.paths:
            zf.write(p, p.name)
    home = tmp_path / "home"
    env = dict(os.environ, DICOMFLOW_HOME=str(home), DATABASE_URL="postgres://nobody@127.0.0.1:9/none")
    failed = subprocess.run([DICOMFLOW, "import", str(archive), "--workers", "2", "-q", "--json"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert list((home / "work").iterdir()) == []


@pytest.mark.parametrize("command", [["stats", "--json"], ["import", "{folder}", "--json"]])
def test_an_unreachable_database_is_one_clear_error(tmp_path, command):
    folder = tmp_path / "ct"
    synth.write_image_series(folder, n_slices=2, rows=16, cols=16, seed=5)
    env = {**os.environ, "DICOMFLOW_HOME": str(tmp_path / "home"), "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
    done = subprocess.run([DICOMFLOW, *(c.replace("{folder}", str(folder)) for c in command)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.startswith("the database cannot be used:") and "DATABASE_URL" in error
    assert done.stderr.strip() == f"error: {error}"
