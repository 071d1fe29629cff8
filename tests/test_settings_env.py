"""Environment variables: read in ``dicomflow.settings`` only, parsed strictly (a bad value is one
clear ``error:`` line naming the variable and what it accepts), and all listed in the README."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import dicomflow
from dicomflow.core.archive import ArchiveLimits
from dicomflow.core.env import Environment
from dicomflow.errors import ConfigurationError

SRC = Path(dicomflow.__file__).parent
README = SRC.parent.parent / "README.md"
DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))


def _stats(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the test home's own SQLite
    environ.update({"DICOMFLOW_HOME": str(tmp_path / "home"), **env})
    return subprocess.run([DICOMFLOW, "stats", "--json"], env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("variable", "value", "accepted"), [
    ("DICOMFLOW_SCP_PORT", "abc", "a whole number from 0 to 65535"),
    ("DICOMFLOW_FSYNC", "sometimes", "one of always, batch, never"),
    ("DICOMFLOW_IMPORT_WORKERS", "-2", "a whole number of at least 1"),
    ("DICOMFLOW_SCP_FASTPATH", "maybe", "one of 1, true, yes, on (on) or 0, false, no, off (off)"),
    ("DICOMFLOW_ARCHIVE_MAX_MEMBERS", "0", "a whole number, greater than 0"),
    ("DICOMFLOW_UPLOAD_STALE_DAYS", "-1", "a number greater than 0"),
    ("DICOMFLOW_SCP_ALLOW", "CT1", "comma-separated AET@HOST entries (AET or HOST may be *, HOST may be an IP "
                                   "address, a CIDR network or a host name)"),
    ("DICOMFLOW_AUTO_PROCESS_PROJECT", "../etc", "a research project key (letters, digits, '_', '.', '-')"),
    ("DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS", "-5", "a number of at least 0"),
])
def test_a_bad_value_is_one_clear_line(tmp_path, variable, value, accepted):
    result = _stats(tmp_path, **{variable: value})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {variable}={value!r} is not valid: expected {accepted}"]
    assert json.loads(result.stdout) == {"error": result.stderr.strip().removeprefix("error: ")}


def test_a_bad_url_is_named_without_repeating_its_password(tmp_path):
    result = _stats(tmp_path, DATABASE_URL="nosuchdb://user:hunter2@db.example/x")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: DATABASE_URL is not valid: expected sqlite:///PATH")
    assert "hunter2" not in result.stderr + result.stdout


def test_good_values_are_taken(tmp_path):
    result = _stats(tmp_path, DICOMFLOW_SCP_PORT=" 104 ", DICOMFLOW_FSYNC="NEVER", DICOMFLOW_SCP_FASTPATH="off",
                    DICOMFLOW_SCP_ALLOW="CT1@10.0.0.0/8, *@localhost,TPS@[::1]",
                    DICOMFLOW_ARCHIVE_MAX_TOTAL_SIZE="5G", DICOMFLOW_UPLOAD_STALE_DAYS="")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["instances"] == 0


def test_environment_reader():
    env = Environment({"N": "7", "B": "Yes", "C": "Batch", "L": " a, ,b ", "EMPTY": "  ", "F": "nan"})
    assert env.integer("N", 1, minimum=1, maximum=9) == 7 and env.integer("EMPTY", 3) == 3
    assert env.boolean("B", False) is True and env.boolean("UNSET", True) is True
    assert env.choice("C", "never", ("always", "batch", "never")) == "batch"
    assert env.items("L") == ["a", "b"] and env.items("UNSET", ["x"]) == ["x"]
    with pytest.raises(ConfigurationError, match=r"^N='7' is not valid: expected a whole number of at most 5$"):
        env.integer("N", 1, maximum=5)
    with pytest.raises(ConfigurationError, match="^F='nan' is not valid"):
        env.number("F", 1.0)
    assert str(env.invalid("B", "anything", secret=True)) == "B is not valid: expected anything"  # value not shown


def test_archive_limits_are_strict():
    with pytest.raises(ConfigurationError, match="^DICOMFLOW_ARCHIVE_MAX_DEPTH='3G' is not valid: expected a whole"):
        ArchiveLimits.from_env({"DICOMFLOW_ARCHIVE_MAX_DEPTH": "3G"})
    with pytest.raises(ConfigurationError, match="DICOMFLOW_ARCHIVE_MAX_RATIO='0'"):
        ArchiveLimits.from_env({"DICOMFLOW_ARCHIVE_MAX_RATIO": "0"})
    assert ArchiveLimits.from_env({"DICOMFLOW_ARCHIVE_MAX_DEPTH": "0"}).max_depth == 0


def test_every_variable_is_listed_in_the_readme():
    settings_text = (SRC / "settings.py").read_text()
    read = set(re.findall(r'ENV\.\w+\(\s*"([A-Z_]+)"', settings_text))
    read |= {f"DICOMFLOW_ARCHIVE_{f.name.upper()}" for f in fields(ArchiveLimits)}
    assert {"DICOMFLOW_HOME", "DATABASE_URL", "DICOMFLOW_SCP_PORT", "DICOMFLOW_AUTO_PROCESS_PROJECT"} <= read
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert read - listed == set(), "variables missing from the README's Configuration table"
    assert {v for v in listed if v.startswith("DICOMFLOW_")} - read == set(), "README lists variables nobody reads"


def test_a_home_that_cannot_be_a_folder_is_named(tmp_path):
    home = tmp_path / "a-file"
    home.write_text("")
    result = _stats(tmp_path, DICOMFLOW_HOME=str(home))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: DICOMFLOW_HOME={str(home)!r} is not valid: expected a folder "
                                          f"dicomflow can create and write ({home}: File exists)"]
