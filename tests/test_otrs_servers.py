"""How the real-Znuny tests are run: the `znuny` marker, skip or fail, and CI's set-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import otrs_servers

ROOT = Path(__file__).resolve().parent.parent


# --- skipped locally, failed in CI -----------------------------------------------------------


def test_a_znuny_that_does_not_answer_is_named_with_the_reason():
    reason = otrs_servers.znuny_answer("http://127.0.0.1:9")
    assert reason.startswith("no Znuny answers at http://127.0.0.1:9 (")


def test_without_znuny_the_tests_are_skipped_locally_and_fail_when_required(monkeypatch):
    monkeypatch.setattr(otrs_servers, "ZNUNY_REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="run `bash ../shared/znuny/setup.sh`"):
        otrs_servers._unavailable("no Znuny answers at x")
    monkeypatch.setattr(otrs_servers, "ZNUNY_REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="ZNUNY_REQUIRED is set but no Znuny"):
        otrs_servers._unavailable("no Znuny answers at x")


def collected(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_every_test_of_the_real_server_carries_the_znuny_marker():
    files = ["tests/test_znuny_contract.py", "tests/test_sim_matches_znuny.py"]
    marked = collected("-m", "znuny", *files)
    unmarked = collected("-m", "not znuny", *files)
    assert marked and all("[znuny" in test for test in marked)
    assert unmarked and not any("znuny" in test.split("[")[1] for test in unmarked)
    assert len(marked) == len(unmarked)  # each body runs against both servers


# --- .ci/run ---------------------------------------------------------------------------------


def fake_world(tmp_path: Path, setup_script: str | None) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/run in a project beside a `shared/znuny/setup.sh`, with make and the
    database tools replaced by stubs that write what they saw to `log`."""
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    (project / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    if setup_script is not None:
        (tmp_path / "shared" / "znuny").mkdir(parents=True)
        (tmp_path / "shared" / "znuny" / "setup.sh").write_text(setup_script)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "log"
    tools = {
        "make": f'echo "make $* ZNUNY_URL=$ZNUNY_URL ZNUNY_REQUIRED=$ZNUNY_REQUIRED" >> {log}',
        "pg_isready": "exit 0",
        "redis-cli": "echo PONG",
    }
    for name, body in tools.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ZNUNY_")},
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "ZNUNY_SETUP_WAIT": "0",
    }
    return project, env


def run_ci(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(project / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )


def test_ci_sets_up_the_shared_znuny_beside_the_checkout_before_the_tests(tmp_path):
    log = tmp_path / "log"
    project, env = fake_world(tmp_path, f'echo "setup in $(pwd)" >> {log}\n')
    done = run_ci(project, env)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        f"setup in {project}",
        "make test ZNUNY_URL=http://127.0.0.1:8180 ZNUNY_REQUIRED=1",
    ]


def test_ci_fails_clearly_without_the_shared_znuny(tmp_path):
    project, env = fake_world(tmp_path, None)
    done = run_ci(project, env)
    assert done.returncode == 1
    assert f"{project}/../shared/znuny/setup.sh not found" in done.stderr
    assert not (tmp_path / "log").exists()  # the tests never ran


def test_ci_waits_for_another_setup_and_stops_on_a_failed_one(tmp_path):
    log = tmp_path / "log"
    busy = (
        f'if [ ! -f {tmp_path}/tried ]; then touch {tmp_path}/tried; echo "setup.sh: ERROR: '
        'another setup.sh is running (lock /run/znuny-setup/setup.lock)" >&2; exit 1; fi\n'
        f"echo setup >> {log}\n"
    )
    project, env = fake_world(tmp_path, busy)
    done = run_ci(project, env)
    assert done.returncode == 0, done.stderr
    assert "Another Znuny setup is running; trying again" in done.stdout
    assert log.read_text().splitlines()[0] == "setup"

    broken = tmp_path / "broken"
    broken.mkdir()
    project, env = fake_world(broken, 'echo "setup.sh: ERROR: step apt failed" >&2; exit 1\n')
    done = run_ci(project, env)
    assert done.returncode == 1
    assert "setup.sh: ERROR: step apt failed" in done.stderr
    assert ".ci/run: ERROR: the Znuny setup failed" in done.stderr
    assert not (broken / "log").exists()
