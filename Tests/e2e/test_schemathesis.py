"""The gateway's own API, generated against from its OpenAPI document by schemathesis: as a student with an API
key and as an instructor with a browser session, every answer is below 500, and the process is alive and has
logged no crash at the end.

It runs on a gateway of its own (the runs create, change and delete whatever they can reach), and is bounded
in time (`SCHEMATHESIS_SECONDS` per run, 60 by default).
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
import sys
from pathlib import Path

import httpx
import pytest

from conftest import SCRATCH, _start_gateway
from helpers import WAIT, session

SECONDS = int(os.environ.get("SCHEMATHESIS_SECONDS", "60"))
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Lines a process that trapped or crashed leaves in its log.
CRASH_MARKS = ("Fatal error", "Swift runtime failure", "Segmentation fault", "Illegal instruction", "💣")


@pytest.fixture(scope="module")
def own_gateway(gseai_bin, stub):
    yield from _start_gateway(gseai_bin, stub, "lmstudio", name="schemathesis")


def run_schemathesis(gateway, name: str, headers: dict[str, str], exclude: list[str]) -> subprocess.CompletedProcess:
    report = SCRATCH / f"schemathesis-{name}.xml"
    command = [
        str(SCHEMATHESIS), "run", f"{gateway.base_url}/openapi.json", "--url", gateway.base_url,
        "--checks", "not_a_server_error", "--max-time", str(SECONDS), "--max-examples", "30",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "20", "--workers", "2",
        "--seed", "11", "--no-color", "--report", "junit", "--report-junit-path", str(report),
        "--generation-database", "none", "--generation-with-security-parameters", "false",
    ]
    for name_, value in headers.items():
        command += ["--header", f"{name_}: {value}"]
    for path in exclude:
        command += ["--exclude-path-regex", path]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS * 3 + 120, cwd=SCRATCH)
    # The whole output, for a failure's details (the assertion shows its end).
    (SCRATCH / f"schemathesis-{name}.txt").write_text(result.stdout + result.stderr)
    return result


def assert_clean(gateway, name: str, result: subprocess.CompletedProcess) -> None:
    summary = "\n".join(result.stdout.splitlines()[-60:])
    # The verdict is read from the report and the gateway's own log, not the exit status: schemathesis also
    # exits non-zero on errors of its own (hypothesis failing to describe a lambda, say), which say nothing
    # of the gateway.
    report = ET.parse(SCRATCH / f"schemathesis-{name}.xml").getroot()
    suite = report if report.tag == "testsuite" else report.find("testsuite")
    assert suite is not None and int(suite.get("tests", "0")) > 30, f"schemathesis tested too little:\n{summary}"
    assert int(suite.get("failures", "0")) == 0, f"schemathesis found answers >= 500:\n{summary}"
    server_errors = re.findall(r"status=5\d\d", gateway.log_path.read_text(errors="replace"))
    assert not server_errors, f"the gateway answered {len(server_errors)} requests with 5xx:\n{summary}"
    assert httpx.get(f"{gateway.base_url}/healthz", timeout=WAIT).status_code == 200, "the gateway stopped serving"
    log = gateway.log_path.read_text(errors="replace")
    crashes = [line for line in log.splitlines() if any(mark in line for mark in CRASH_MARKS)]
    assert not crashes, "the gateway's log shows a crash:\n" + "\n".join(crashes[:20])


def test_a_student_key_gets_no_server_error(own_gateway):
    key = own_gateway.keys["alice"]
    # Revoking its own key would end the run's credentials early: every later answer a plain 401.
    result = run_schemathesis(own_gateway, "student", {"Authorization": f"Bearer {key}"}, exclude=[r"^/auth/keys/"])
    assert_clean(own_gateway, "student", result)


def test_an_instructor_session_gets_no_server_error(own_gateway):
    client = session(own_gateway.base_url, "ines", own_gateway.passwords["ines"], agent="schemathesis")
    cookie = client.cookies.get("gseai_session")
    headers = {"Cookie": f"gseai_session={cookie}", "X-CSRF-Token": client.headers["X-CSRF-Token"],
               "Origin": own_gateway.base_url}
    # Signing out, or changing the password (which ends every session), would end the session the run uses.
    result = run_schemathesis(own_gateway, "instructor", headers,
                              exclude=[r"^/auth/logout$", r"^/auth/password$", r"^/auth/sessions/"])
    client.close()
    assert_clean(own_gateway, "instructor", result)
