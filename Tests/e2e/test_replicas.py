"""Two gateway replicas on one real PostgreSQL 15, behind a real nginx that balances round robin without
stickiness: the real clients through nginx, a rate limit exact across both, a key revoked on one refused on the
other within 100 ms, and a replica killed with `kill -9` mid-answer whose answer the other marks interrupted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from conftest import SCRATCH, _start_gateway
from helpers import WAIT, InstructorAPI, add_member, bearer, session
from pages import choose_model, send, sign_in, wait_for_answer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL 15 of its own (scripts/postgres): its URL."""
    SCRATCH.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="postgres-", dir=SCRATCH))
    folder.chmod(0o755)
    started = subprocess.run([str(ROOT / "scripts" / "postgres"), "start", str(folder / "pg")], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {started.stderr}")
    yield started.stdout.strip()
    subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", str(folder / "pg")], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def balancer_port():
    """The port nginx will listen on, known before the replicas start: people reach them at its URL."""
    return _free_port()


@pytest.fixture(scope="module")
def replicas(gseai_bin, stub, postgres, balancer_port):
    """Two `gseai serve` on the same database, reached through the balancer's URL: (first, second)."""
    config = {"gseai": {"public": {"url": f"http://127.0.0.1:{balancer_port}"}}}
    first_run = _start_gateway(gseai_bin, stub, "lmstudio", name="replica-a", database=postgres, config=config)
    first = next(first_run)
    second_run = _start_gateway(gseai_bin, stub, "lmstudio", name="replica-b", database=postgres, replica_of=first,
                                config=config)
    second = next(second_run)
    yield first, second
    for run in (second_run, first_run):
        run.close()


@pytest.fixture(scope="module")
def balancer(replicas, balancer_port):
    """nginx in front of both replicas, round robin: its base URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    folder = Path(tempfile.mkdtemp(prefix="nginx-", dir=SCRATCH))
    port = balancer_port
    (folder / "logs").mkdir()
    (folder / "nginx.conf").write_text(f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    upstream gseai {{ server 127.0.0.1:{replicas[0].port}; server 127.0.0.1:{replicas[1].port}; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 32m;
        location / {{
            proxy_pass http://gseai;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
""")
    process = subprocess.Popen([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            pytest.fail(f"nginx did not start: {process.stderr.read() if process.poll() is not None else 'no answer'}")
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests_seen(gateway) -> int:
    """How many chat completions a replica answered, from its own metrics."""
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=WAIT).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gseai_http_requests_total") and 'route="/v1/chat/completions"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_the_openai_client_through_nginx_reaches_both_replicas(replicas, balancer):
    client = OpenAI(base_url=f"{balancer}/v1", api_key=replicas[0].keys["alice"], max_retries=0, timeout=WAIT)
    before = [_requests_seen(r) for r in replicas]
    for index in range(6):
        answer = client.chat.completions.create(model="stub/echo-text", messages=[{"role": "user", "content": f"n{index}"}])
        assert answer.choices[0].message.content == f"Echo: n{index}"
    after = [_requests_seen(r) for r in replicas]
    assert all(a > b for a, b in zip(after, before)), (before, after)


def _student_in_class(first, **policy) -> tuple[str, str]:
    """A fresh student with a key, in a fresh class of `ines` with `policy`: (key, class name)."""
    teacher = InstructorAPI(first.base_url, "ines", first.passwords["ines"])
    name = f"rep{uuid.uuid4().hex[:8]}"
    password = first.add_user(name, "student")
    key = first.create_key(name, label="e2e")
    course = teacher.create_class(f"Class {name}", **policy)
    add_member(teacher, course["id"], name, password)
    return key, course["name"]


def _concurrently(balancer: str, key: str, texts: list[str]) -> list[httpx.Response]:
    """The requests at once, through nginx (so spread over both replicas)."""
    def one(text: str) -> httpx.Response:
        return httpx.post(f"{balancer}/v1/chat/completions", headers=bearer(key), timeout=WAIT,
                          json={"model": "stub/echo-text", "messages": [{"role": "user", "content": text}]})
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        return list(pool.map(one, texts))


def test_requests_per_minute_hold_across_both_replicas(replicas, balancer):
    key, course = _student_in_class(replicas[0], requests_per_minute=4)
    answers = _concurrently(balancer, key, [f"r{index}" for index in range(10)])
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 4 and statuses.count(429) == 6, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert f"the limit for your class '{course}' is 4" in answer.json()["error"]["message"], answer.text


def test_a_daily_budget_holds_across_both_replicas(replicas, balancer):
    # Each request reserves 20 tokens, and all eight arrive while the first answers still run (slowly): a budget
    # of 50 admits exactly three (0, 20, 40 reserved), whichever replica each reaches. Replicas that each kept
    # their own count would admit three each.
    key, course = _student_in_class(replicas[0], max_output_tokens=20, daily_token_budget=50)
    answers = _concurrently(balancer, key, [f"b{index} [[slow]] one two three four five six" for index in range(8)])
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 3, statuses
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 429, answer.text
            assert f"the daily budget of your class '{course}' is 50 tokens" in answer.json()["error"]["message"], answer.text


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_100_ms(replicas):
    first, second = replicas
    name = f"rev{uuid.uuid4().hex[:8]}"
    password = first.add_user(name, "student")
    student = session(first.base_url, name, password)
    try:
        made = student.post("/auth/keys", json={"label": "script"})
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["api_key"]["id"]
        # The other replica knows the key (and keeps it for a while).
        assert httpx.get(f"{second.base_url}/v1/models", headers=bearer(key), timeout=WAIT).status_code == 200
        revoked = student.delete(f"/auth/keys/{key_id}")
        assert revoked.status_code == 204, revoked.text
        started = time.monotonic()
        while True:
            status = httpx.get(f"{second.base_url}/v1/models", headers=bearer(key), timeout=WAIT).status_code
            if status == 401:
                break
            assert time.monotonic() - started < 2, "the other replica still took the revoked key"
        assert time.monotonic() - started < 0.1, time.monotonic() - started
    finally:
        student.close()


def test_the_chat_page_through_nginx_never_sees_two_replicas(replicas, balancer, browser):
    """Round robin without stickiness: the page's sign-in, its message and the answer's events go to both
    replicas in turn, and the page sees one gateway."""
    name = f"page{uuid.uuid4().hex[:8]}"
    password = replicas[0].add_user(name, "student")
    sign_in(browser, balancer, name, password)
    choose_model(browser, "stub/echo-text")
    # The second answer continues the first's upstream response (the stub says which turn it is), whichever
    # replica stored it.
    for index, (text, turn) in enumerate([("Hello through nginx [[slow]] one two three", ""),
                                          ("And again [[slow]] four five", " (turn 2)")], start=1):
        send(browser, text)
        answer = wait_for_answer(browser, index, timeout=60)
        assert answer["text"] == f"Echo: {text}{turn}", answer
    # Both replicas served the page's conversation (its messages, its answers' events).
    for replica in replicas:
        text = httpx.get(f"{replica.base_url}/metrics", timeout=WAIT).text
        assert re.search(r'route="/api/conversations/[^"]+"', text), replica.base_url


def test_a_replica_killed_mid_answer_leaves_it_interrupted_and_the_other_serves_on(replicas, balancer, postgres):
    """Last in this module: it kills the first replica."""
    first, second = replicas
    key = first.keys["alice"]
    created = httpx.post(f"{first.base_url}/api/conversations", headers=bearer(key), json={"model": "stub/echo-text"}, timeout=WAIT)
    assert created.status_code == 201, created.text
    conversation = created.json()["id"]
    words = " ".join(f"w{i}" for i in range(200))
    sent = httpx.post(f"{first.base_url}/api/conversations/{conversation}/messages", headers=bearer(key),
                      json={"text": f"[[slow]] {words}"}, timeout=WAIT)
    assert sent.status_code == 202, sent.text
    message = sent.json()["assistant_message"]["id"]
    # The other replica sees it live (its owner is alive): not interrupted.
    time.sleep(1)
    detail = httpx.get(f"{second.base_url}/api/conversations/{conversation}", headers=bearer(key), timeout=WAIT).json()
    assert detail["messages"][-1]["status"] == "streaming", detail
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    # Once its heartbeat is 15 s old, the other marks its answer interrupted (it sweeps every 5 s).
    deadline = time.monotonic() + 40
    status = "streaming"
    while time.monotonic() < deadline and status == "streaming":
        time.sleep(0.5)
        detail = httpx.get(f"{second.base_url}/api/conversations/{conversation}", headers=bearer(key), timeout=WAIT).json()
        status = next(m for m in detail["messages"] if m["id"] == message)["status"]
    assert status == "interrupted", detail
    # What was acknowledged is kept: the user's message is there.
    assert detail["messages"][0]["text"].startswith("[[slow]] w0"), detail
    # The other replica serves on.
    client = OpenAI(base_url=f"{second.base_url}/v1", api_key=key, max_retries=0, timeout=WAIT)
    answer = client.chat.completions.create(model="stub/echo-text", messages=[{"role": "user", "content": "still here"}])
    assert answer.choices[0].message.content == "Echo: still here"
    # The database is whole: every table and index checked (PostgreSQL's amcheck).
    amcheck = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_amcheck"))[-1]
    host, port, user, database = re.match(r"postgres://([^@]+)@([^:]+):(\d+)/(\w+)", postgres).group(2, 3, 1, 4)
    checked = subprocess.run([str(amcheck), "--install-missing", "--heapallindexed", "-h", host, "-p", port, "-U", user,
                              "-d", database], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0 and not checked.stdout.strip(), (checked.stdout, checked.stderr)
