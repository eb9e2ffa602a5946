"""Seed 004's text-generation-webui API through the gateway, over `gseai-stub` acting as text-generation-webui
(kind tgw): its internal endpoints (`/v1/internal/*`) as the seed's curl examples call them, with a student's
key and an instructor's, and the openai SDK against `/v1` as the seed's "third-party application" setup does.
"""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI, PermissionDeniedError

from helpers import STUB_MODELS, TEXT, VISION, bearer, openai_error

TIMEOUT = 30


@pytest.fixture(scope="module")
def tgw(gateway_over_stub_tgw):
    return gateway_over_stub_tgw


def post(gateway, name: str, path: str, body=None) -> httpx.Response:
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as http:
        return http.post(path, headers={"Content-Type": "application/json", **bearer(gateway.keys[name])},
                         **({"json": body} if body is not None else {}))


def get(gateway, name: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as http:
        return http.get(path, headers=bearer(gateway.keys[name]))


def test_the_seeds_logits_calls(tgw):
    plain = post(tgw, "alice", "/v1/internal/logits", {"prompt": "Who is best, Asuka or Rei? Answer:", "use_samplers": False})
    assert plain.status_code == 200, plain.text
    logits = plain.json()
    # A flat object of token -> probability: the stub's candidates are the words of its echo.
    assert set(logits) == {"Echo:", "Who", "is", "best,", "Asuka", "or", "Rei?", "Answer:"}
    assert logits["Echo:"] == 0.5 and logits["Who"] == 0.25 and sum(logits.values()) < 1
    sampled = post(tgw, "alice", "/v1/internal/logits",
                   {"prompt": "Who is best, Asuka or Rei? Answer:", "use_samplers": True, "top_k": 3, "top_logits": 2})
    assert sampled.json() == {"Echo:": 0.5, "Who": 0.25}


def test_the_seeds_model_list_and_everyones_reading_endpoints(tgw):
    listed = get(tgw, "alice", "/v1/internal/model/list")
    assert set(listed.json()["model_names"]) == STUB_MODELS
    info = get(tgw, "alice", "/v1/internal/model/info").json()
    assert set(info) == {"model_name", "lora_names", "loader"}
    assert info["model_name"] in STUB_MODELS
    encoded = post(tgw, "alice", "/v1/internal/encode", {"text": "Hello"}).json()
    assert encoded == {"tokens": [72, 101, 108, 108, 111], "length": 5}
    assert post(tgw, "alice", "/v1/internal/decode", {"tokens": encoded["tokens"]}).json() == {"text": "Hello"}
    assert post(tgw, "alice", "/v1/internal/token-count", {"text": "Hello"}).json() == {"length": 5}
    assert get(tgw, "alice", "/v1/internal/lora/list").json() == {"lora_names": ["stub-lora-a", "stub-lora-b"]}
    # text-generation-webui's own refusal (FastAPI's `detail`) passes through as it was.
    missing = post(tgw, "alice", "/v1/internal/encode", {})
    assert missing.status_code == 422 and missing.json() == {"detail": "field required: text"}


def test_the_seeds_model_load_and_what_else_changes_the_server_are_for_staff(tgw):
    load = {"model_name": VISION, "args": {"ctx_size": 32768, "flash_attn": True, "cache_type": "q8_0"}}
    for path, body in [("/v1/internal/model/load", load), ("/v1/internal/model/unload", None),
                       ("/v1/internal/lora/load", {"lora_names": ["stub-lora-a"]}), ("/v1/internal/lora/unload", None),
                       ("/v1/internal/stop-generation", None)]:
        message = openai_error(post(tgw, "alice", path, body), 403)
        assert message == "this needs the instructor role", path
    assert get(tgw, "alice", "/v1/internal/model/info").json()["model_name"] == TEXT

    loaded = post(tgw, "ines", "/v1/internal/model/load", load)
    assert loaded.status_code == 200 and loaded.json() == "OK"
    assert post(tgw, "ines", "/v1/internal/lora/load", {"lora_names": ["stub-lora-a"]}).json() == "OK"
    assert get(tgw, "alice", "/v1/internal/model/info").json() == {
        "model_name": VISION, "lora_names": ["stub-lora-a"], "loader": "llama.cpp"}
    assert post(tgw, "ines", "/v1/internal/lora/unload").json() == "OK"
    assert post(tgw, "ines", "/v1/internal/stop-generation").json() == "OK"
    assert post(tgw, "ines", "/v1/internal/model/unload").json() == "OK"
    assert get(tgw, "alice", "/v1/internal/model/info").json()["model_name"] == "None"
    failed = post(tgw, "ines", "/v1/internal/model/load", {"model_name": "nope.gguf"})
    assert failed.status_code == 400 and failed.json() == {"detail": "Failed to load the model."}
    assert post(tgw, "ines", "/v1/internal/model/load", {"model_name": TEXT}).json() == "OK"


def test_the_openai_sdk_against_v1(tgw):
    client = OpenAI(api_key=tgw.keys["alice"], base_url=f"{tgw.base_url}/v1")
    try:
        assert set(model.id for model in client.models.list().data) == STUB_MODELS
        response = client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "Hello!"}])
        assert response.choices[0].message.content == "Echo: Hello!"
        assert response.usage.completion_tokens == 2
        stream = client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "Hello! Who are you?"}],
                                                stream=True, temperature=0.6, top_p=0.95, extra_body={"top_k": 20})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Echo: Hello! Who are you?"
        completion = client.completions.create(model=TEXT, prompt="This is a cake recipe:\n\n1.", max_tokens=512)
        assert completion.choices[0].text == "Echo: This is a cake recipe:\n\n1."
        # The internal endpoints are beside it, under the same base.
        with pytest.raises(PermissionDeniedError):
            client.post("/internal/model/unload", cast_to=object)
    finally:
        client.close()


def test_without_a_tgw_upstream_the_internal_endpoints_answer_501(gateway_over_stub):
    answer = get(gateway_over_stub, "alice", "/v1/internal/model/info")
    message = openai_error(answer, 501)
    assert message.startswith("/v1/internal/model/info is not available") and "kind tgw" in message
