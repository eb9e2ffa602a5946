"""`gseai serve` stopped the way a service manager stops it (SIGTERM) while a stream is still open: requests in
progress may end for the grace (`gseai.shutdown.grace.seconds`), then the rest is cut; the process ends by itself
with status 0, and the usage of everything answered, the cut stream included, is in the database afterwards."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx
import pytest

from conftest import _start_gateway
from helpers import TEXT, WAIT

GRACE = 3


@pytest.fixture
def gateway_with_a_short_grace(gseai_bin, stub):
    run = _start_gateway(gseai_bin, stub, "lmstudio", name="shutdown",
                         config={"gseai": {"shutdown": {"grace": {"seconds": GRACE}}}})
    gateway = next(run)
    yield gateway
    run.close()


def test_a_stop_with_a_stream_open_waits_the_grace_then_cuts_it_and_loses_no_usage(gateway_with_a_short_grace):
    gateway = gateway_with_a_short_grace
    headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=WAIT) as client:
        answer = client.post("/v1/chat/completions", json={"model": TEXT, "messages": [{"role": "user", "content": "hello there"}]})
        assert answer.status_code == 200, answer.text
        plain_tokens = answer.json()["usage"]["total_tokens"]
        assert plain_tokens > 0

        # The stub sends the first event of `[[hang]]` and then nothing for a minute.
        lines: list[str] = []
        ended = threading.Event()
        first_event = threading.Event()

        def follow() -> None:
            try:
                with client.stream("POST", "/v1/chat/completions", timeout=httpx.Timeout(WAIT, read=60), json={
                    "model": TEXT, "stream": True, "messages": [{"role": "user", "content": "[[hang]] a long answer"}],
                }) as stream:
                    assert stream.status_code == 200
                    for line in stream.iter_lines():
                        lines.append(line)
                        if line.startswith("data: {"):
                            first_event.set()
            except httpx.HTTPError as error:  # the cut: the body ends before its last chunk
                lines.append(f"cut: {type(error).__name__}")
            finally:
                ended.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert first_event.wait(WAIT), f"no first event: {lines}"

        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        # The stream in progress is let be for the grace, not cut at once...
        assert not ended.wait(GRACE - 1), f"the stream was cut before the grace ran out: {lines}"
        # ...then cut, and the process ends by itself.
        status = gateway.process.wait(timeout=GRACE + 20)
        elapsed = time.monotonic() - started
        assert status == 0, f"exit status {status}"
        assert GRACE - 1 <= elapsed < GRACE + 20, elapsed
        assert ended.wait(WAIT), "the stream was still open after the gateway ended"
        assert not any(line.startswith("data: [DONE]") for line in lines), lines

    database = sqlite3.connect(gateway.database)
    try:
        rows = database.execute("SELECT model, requests, input_tokens, output_tokens FROM usage_daily").fetchall()
        integrity = database.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        database.close()
    assert integrity == "ok"
    # Both requests counted: the whole answer with its tokens, the cut stream as a request.
    assert [(model, requests) for model, requests, _, _ in rows] == [(TEXT, 2)], rows
    assert sum(input_tokens + output_tokens for _, _, input_tokens, output_tokens in rows) >= plain_tokens, rows
