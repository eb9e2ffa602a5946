"""Two real llama.cpp servers as one gateway's pool of model servers, one slot each: a script floods them, both
serve it, and a student on the chat page sees their place in line until their answer comes.
"""

from __future__ import annotations

import re
import threading
import uuid

import httpx
import pytest
from openai import OpenAI

from conftest import _start_gateway
from helpers import LLAMA_MODEL, WAIT, session
from pages import choose_model, send, sign_in, wait, wait_for_answer

# Each flood request asks for this many tokens: a few seconds of a model server, while the page waits.
FLOOD_TOKENS = 160

# Records every text the chat page's pending line takes, from now on.
RECORD_PENDING = """
window.__pendingTexts = [];
const record = () => document.querySelectorAll('#messages .pending').forEach(p => {
  const text = p.textContent;
  if (window.__pendingTexts[window.__pendingTexts.length - 1] !== text) window.__pendingTexts.push(text);
});
new MutationObserver(record).observe(document.getElementById('messages'),
  { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture(scope="module")
def gateway_over_pool(gseai_bin, llama, llama_second):
    config = {"gseai": {
        "pool": ["gpu1", "gpu2"],
        "upstream": {
            "gpu1": {"url": llama.base_url, "kind": "llamacpp", "slots": 1, "token": llama.token},
            "gpu2": {"url": llama_second.base_url, "kind": "llamacpp", "slots": 1, "token": llama_second.token},
            # Read often, so that both servers' models are known at once.
            "refresh": {"seconds": 1},
        },
    }}
    yield from _start_gateway(gseai_bin, llama, "llamacpp", config=config, name="pool")


def upstreams(gateway) -> list[dict]:
    admin = session(gateway.base_url, "admin", gateway.admin_password, agent="e2e-admin")
    try:
        answer = admin.get("/api/admin/upstreams")
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]
    finally:
        admin.close()


def waits_per_upstream(gateway) -> dict[str, float]:
    """How many requests each upstream has served, from the gateway's wait histogram."""
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=WAIT).text
    counts: dict[str, float] = {}
    for match in re.finditer(r'^gseai_queue_wait_seconds_count\{([^}]*)\} (\S+)$', text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        counts[labels["upstream"]] = counts.get(labels["upstream"], 0) + float(match.group(2))
    return counts


def test_both_model_servers_serve_and_report_their_models(gateway_over_pool):
    gateway = gateway_over_pool
    wait_until = lambda: all(u["models"] == [LLAMA_MODEL] for u in upstreams(gateway))
    for _ in range(60):
        if wait_until():
            break
        threading.Event().wait(0.5)
    listed = upstreams(gateway)
    assert [u["name"] for u in listed] == ["gpu1", "gpu2"]
    assert all(u["up"] and u["slots"] == 1 and u["kind"] == "llamacpp" for u in listed), listed
    assert all(gateway.upstream.token not in str(u) for u in listed)
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.keys["alice"], max_retries=0, timeout=120)
    # The union of the two lists: the one model, once.
    assert [m.id for m in client.models.list().data] == [LLAMA_MODEL]
    before = waits_per_upstream(gateway)
    results = []

    def ask(index: int) -> None:
        answer = client.chat.completions.create(model=LLAMA_MODEL, max_tokens=8,
                                                messages=[{"role": "user", "content": f"Say {index}."}])
        results.append(answer.choices[0].message.content)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert len(results) == 4 and all(isinstance(text, str) for text in results), results
    after = waits_per_upstream(gateway)
    served = {name: after.get(name, 0) - before.get(name, 0) for name in ("gpu1", "gpu2")}
    # One slot each: with four at once, both served.
    assert served["gpu1"] >= 1 and served["gpu2"] >= 1, served
    assert served["gpu1"] + served["gpu2"] == 4, served


def test_the_chat_page_shows_its_place_in_line_while_a_script_floods(gateway_over_pool, browser):
    gateway = gateway_over_pool
    name = f"pool{uuid.uuid4().hex[:8]}"
    password = gateway.add_user(name, "student")
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.keys["alice"], max_retries=0, timeout=300)
    stop = threading.Event()
    failures: list[str] = []

    def flood() -> None:
        while not stop.is_set():
            try:
                stream = client.chat.completions.create(model=LLAMA_MODEL, max_tokens=FLOOD_TOKENS, stream=True,
                                                        messages=[{"role": "user", "content": "Tell a long story."}])
                for _ in stream:
                    pass
            except Exception as error:  # noqa: BLE001 - a refusal would be a finding; recorded and asserted below
                failures.append(repr(error))
                return

    # The flooder keeps both slots busy (its cap) and more waiting.
    threads = [threading.Thread(target=flood, daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(240):
            listed = upstreams(gateway)
            if all(u["busy"] == 1 for u in listed):
                break
            threading.Event().wait(0.25)
        assert all(u["busy"] == 1 for u in listed), (listed, failures)
        sign_in(browser, gateway.base_url, name, password)
        choose_model(browser, LLAMA_MODEL)
        # A wait may be short (one flood answer's rest): every text the pending line shows is recorded as the
        # page sets it, so none is missed between two polls.
        browser.execute_script(RECORD_PENDING)
        send(browser, "Hello!")
        seen = "return window.__pendingTexts.filter(t => t.startsWith('Waiting for the model'))[0] || ''"
        said = wait(browser, lambda d: d.execute_script(seen), timeout=60,
                    message="the page never said it was waiting for the model")
        assert re.fullmatch(r"Waiting for the model — (you are next|\d+ ahead of you)", said), said
        answer = wait_for_answer(browser, 1, timeout=240)
        assert answer["text"], answer
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
    assert not failures, failures
