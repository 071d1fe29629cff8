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
