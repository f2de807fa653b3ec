"""Start the OTRS simulator in its own process for a benchmark, so it does not share the
benchmark's interpreter (and GIL) with the bridge code being measured."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
WEBSERVICE = "/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def simulator(*args: str):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otrs_sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/_sim/stats", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def calls(url: str) -> int:
    """All operation calls the simulator has counted so far."""
    return sum(requests.get(url + "/_sim/stats", timeout=10).json()["calls"].values())


def import_connection(url: str, name: str = "bench"):
    from connections.models import Connection
    from connections.packages import apply_import, load_package, plan_import

    path = ROOT / "packages" / "otrs-genericticketconnector.json"
    values = {
        "CONNECTION": name,
        "BASEURL": url + WEBSERVICE,
        "USERNAME": "bridge",
        "PASSWORD": "bridge-demo-password",
    }
    apply_import(plan_import(load_package(path.read_bytes(), path.name), values))
    return Connection.objects.get(name=name)
