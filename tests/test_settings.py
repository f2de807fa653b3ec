"""Settings: production passes `check --deploy`, and secrets have no default without DEBUG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEY"}
    }
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "otrsbridge.settings"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_check_deploy():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "DEBUG": "False",
            "SECRET_KEY": "prod-" + "x7Kq9!vR2#mP" * 6,
            "FIELD_ENCRYPTION_KEY": "cHJvZC1rZXktcHJvZC1rZXktcHJvZC1rZXktcHJvZC0=",
            "ALLOWED_HOSTS": "bridge.example.com",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_missing_secret_key_without_debug_is_refused():
    result = _manage("check", env={"DEBUG": "False", "ALLOWED_HOSTS": "bridge.example.com"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_uses_development_defaults():
    result = _manage("check", env={"DEBUG": "True"})
    assert result.returncode == 0, result.stderr


def test_q_cluster_timeout_is_below_retry(settings):
    from otrsbridge.checks import check_q_cluster

    assert check_q_cluster(None) == []
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 400, "retry": 300}
    ids = [e.id for e in check_q_cluster(None)]
    assert "otrsbridge.E001" in ids


def test_provision_threads_beyond_the_maximum_stop_start_up():
    for value in ("100000", "0"):
        result = _manage("check", env={"DEBUG": "True", "PROVISION_THREADS": value})
        assert result.returncode != 0
        assert f"PROVISION_THREADS is {value}; it must be between 1 and 64" in result.stderr


def test_a_refused_network_that_is_no_cidr_stops_start_up():
    result = _manage(
        "check", env={"DEBUG": "True", "OTRS_REFUSED_NETWORKS": "169.254.0.0/16,metadata"}
    )
    assert result.returncode != 0
    assert "OTRS_REFUSED_NETWORKS: 'metadata' is not an address range" in result.stderr


def test_refused_networks_come_from_the_environment():
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.OTRS_REFUSED_NETWORKS)",
        env={"DEBUG": "True", "OTRS_REFUSED_NETWORKS": " 10.0.0.0/8 , fe80::/10"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['10.0.0.0/8', 'fe80::/10']"


def test_login_lockout_settings_come_from_the_environment():
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME, s.AXES_LOCKOUT_PARAMETERS)",
        env={
            "DEBUG": "True",
            "AXES_FAILURE_LIMIT": "3",
            "AXES_COOLOFF_MINUTES": "0",
            "AXES_LOCKOUT_PARAMETERS": "username+ip_address, ip_address",
        },
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip().splitlines()[-1]
        == "3 None [['username', 'ip_address'], 'ip_address']"
    )


def test_a_wrong_lockout_setting_stops_start_up_with_a_message():
    for variable, value, message in [
        ("AXES_FAILURE_LIMIT", "0", "AXES_FAILURE_LIMIT is 0; it must be at least 1."),
        ("AXES_COOLOFF_MINUTES", "-5", "AXES_COOLOFF_MINUTES is -5.0; it must be at least 0."),
        ("TRUSTED_PROXY_COUNT", "-1", "TRUSTED_PROXY_COUNT is -1; it must be at least 0."),
        (
            "AXES_LOCKOUT_PARAMETERS",
            "username+ip",
            "AXES_LOCKOUT_PARAMETERS: ip in 'username+ip' is not one of ip_address, "
            "user_agent, username",
        ),
        ("AXES_LOCKOUT_PARAMETERS", " , ", "AXES_LOCKOUT_PARAMETERS is empty."),
    ]:
        result = _manage("check", env={"DEBUG": "True", variable: value})
        assert result.returncode != 0, variable
        assert message in result.stderr, (variable, result.stderr[-500:])
