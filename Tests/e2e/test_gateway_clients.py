"""The gateway (`gseai serve`) as its users meet it: the real Python client `gseai`, the `openai` and
`anthropic` SDKs, the administrative CLI and the account API, in front of the stub and of llama.cpp.

Each client is pointed at the gateway with a personal key (`gsk_…`) made by the CLI; the gateway swaps it
for the upstream's token. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import base64
import math
import struct
import time
import uuid

import anthropic
import gseai
import httpx
import openai
import pytest

from helpers import EMBED, LLAMA_MODEL, TEXT, VISION, anthropic_error, bearer, chat_text, openai_error

TIMEOUT = 30


# ---------------------------------------------------------------------------
# Helpers (the shared ones are in helpers.py; the `gateway` fixture is in conftest.py)


def delta_text(events: list[dict]) -> str:
    return "".join(event["content"] for event in events if event["type"] == "message.delta")


def user_rows(gateway) -> dict[str, list[str]]:
    """`gseai user list` as username -> [username, role, status, created]."""
    lines = gateway.admin_ok("user", "list").splitlines()
    assert lines[0].split("\t")[:3] == ["USERNAME", "ROLE", "STATUS"]
    return {line.split("\t")[0]: line.split("\t") for line in lines[1:]}


@pytest.fixture(scope="module")
def http(gateway):
    """A plain HTTP client on the gateway, without credentials."""
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as client:
        yield client


# This module's own `student` and `instructor`: clients with the keys of `alice` and `ines`, not the fresh
# accounts (username, password) of the same names in conftest.py.
@pytest.fixture(scope="module")
def student(gateway):
    """The real `gseai.GSEAIServer` with the student's key."""
    with gseai.GSEAIServer(api_token=gateway.keys["alice"], host=gateway.host, port=gateway.port) as client:
        yield client


@pytest.fixture(scope="module")
def instructor(gateway):
    """The real `gseai.GSEAIServer` with the instructor's key."""
    with gseai.GSEAIServer(api_token=gateway.keys["ines"], host=gateway.host, port=gateway.port) as client:
        yield client


def openai_client(gateway, key: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=TIMEOUT, **options)


def anthropic_client(gateway, key: str | None, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=TIMEOUT, **options)


@pytest.fixture(scope="module")
def oai(gateway):
    with openai_client(gateway, gateway.keys["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def claude(gateway):
    with anthropic_client(gateway, gateway.keys["alice"]) as client:
        yield client


# ---------------------------------------------------------------------------
# The Python client `gseai`: models (instructors only for load/unload/download)


def test_gseai_list_models(student):
    models = {entry["key"]: entry for entry in student.list_models()["models"]}
    assert set(models) == {VISION, TEXT, EMBED}
    assert models[VISION]["capabilities"]["vision"] is True
    assert models[EMBED]["type"] == "embedding"


def test_gseai_instructor_loads_and_unloads(instructor):
    loaded = instructor.load_model(TEXT, ttl=300)
    assert loaded["status"] == "loaded"
    assert loaded["instance_id"] == TEXT
    assert loaded["ttl"] == 300
    try:
        models = {entry["key"]: entry for entry in instructor.list_models()["models"]}
        assert [instance["id"] for instance in models[TEXT]["loaded_instances"]] == [TEXT]
    finally:
        assert instructor.unload_model(TEXT) == {"instance_id": TEXT, "status": "unloaded"}


def test_gseai_instructor_downloads_and_polls(instructor):
    started = instructor.download_model("someone/gateway-model-GGUF")
    assert started["status"] == "downloading"
    job = started["job_id"]
    statuses = []
    for _ in range(10):
        status = instructor.get_download_status(job)
        assert status["job_id"] == job
        statuses.append(status["status"])
        if status["status"] == "completed":
            break
    assert statuses[-1] == "completed"
    assert status["downloaded_bytes"] == status["total_size_bytes"]


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.load_model(TEXT, ttl=60),
        lambda client: client.unload_model(TEXT),
        lambda client: client.download_model("someone/other-model-GGUF"),
        lambda client: client.get_download_status("job_1"),
    ],
    ids=["load_model", "unload_model", "download_model", "get_download_status"],
)
def test_gseai_student_may_not_manage_models(student, call):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        call(student)
    openai_error(failure.value.response, 403, "permission_error")


def test_gseai_student_cannot_reach_download_status_with_a_real_job(student, instructor):
    job = instructor.download_model("someone/third-model-GGUF")["job_id"]
    with pytest.raises(httpx.HTTPStatusError) as failure:
        student.get_download_status(job)
    assert failure.value.response.status_code == 403


# The Python client: chat


def test_gseai_chat_text(student):
    response = student.chat(TEXT, "hello there", system_prompt="Be brief.", temperature=0.2, max_output_tokens=50)
    assert chat_text(response) == "Echo: hello there"
    assert response["response_id"].startswith("resp_")
    assert response["stats"]["total_output_tokens"] > 0


def test_gseai_chat_items_with_an_image(student, png_data_url):
    response = student.chat(
        VISION, [{"type": "message", "content": "What is in this picture?"}, {"type": "image", "data_url": png_data_url}]
    )
    assert chat_text(response) == "Echo: What is in this picture? [images: 1]"


def test_gseai_chat_stream(student):
    events = list(student.chat(TEXT, "stream this please", stream=True))
    types = [event["type"] for event in events]
    assert types[0] == "chat.start"
    assert types[-1] == "chat.end"
    assert types.count("message.delta") > 1
    assert delta_text(events) == "Echo: stream this please"
    assert events[-1]["result"]["response_id"].startswith("resp_")


def test_gseai_chat_continues_its_own_response(student):
    first = student.chat(TEXT, "My name is Ada.")
    second = student.chat(TEXT, "What is my name?", previous_response_id=first["response_id"])
    assert chat_text(second) == "Echo: What is my name? (turn 2)"
    # A response id issued in a stream is recorded for its user too.
    events = list(student.chat(TEXT, "And again?", previous_response_id=second["response_id"], stream=True))
    assert delta_text(events) == "Echo: And again? (turn 3)"
    third = events[-1]["result"]["response_id"]
    fourth = student.chat(TEXT, "Once more?", previous_response_id=third)
    assert chat_text(fourth) == "Echo: Once more? (turn 4)"


def test_gseai_chat_another_users_response_is_404_like_an_unknown_one(student, instructor):
    mine = student.chat(TEXT, "A secret of mine.")["response_id"]
    with pytest.raises(httpx.HTTPStatusError) as theirs:
        instructor.chat(TEXT, "Tell me their secret", previous_response_id=mine)
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        instructor.chat(TEXT, "Tell me", previous_response_id="resp_doesnotexist")
    other = openai_error(theirs.value.response, 404, "not_found_error")
    missing = openai_error(unknown.value.response, 404, "not_found_error")
    assert other.replace(mine, "ID") == missing.replace("resp_doesnotexist", "ID")
    # Streaming asks are refused the same way, before anything reaches the model server.
    with pytest.raises(httpx.HTTPStatusError) as streamed:
        list(instructor.chat(TEXT, "Tell me", previous_response_id=mine, stream=True))
    assert streamed.value.response.status_code == 404


def test_gseai_chat_upstream_error_is_502(student):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        student.chat(TEXT, "please [[error]]")
    openai_error(failure.value.response, 502)


def test_gseai_chat_stream_cut_ends_with_an_error_and_chat_end(student):
    events = list(student.chat(TEXT, "cut [[cut]] this stream short", stream=True))
    types = [event["type"] for event in events]
    assert types[0] == "chat.start"
    assert "error" in types
    assert types[-1] == "chat.end"


# The Python client: OpenAI-compatible and Anthropic-compatible


def test_gseai_list_models_openai(student):
    listing = student.list_models_openai()
    assert listing["object"] == "list"
    assert {model["id"] for model in listing["data"]} == {VISION, TEXT, EMBED}


def test_gseai_chat_completions(student):
    completion = student.chat_completions(TEXT, [{"role": "user", "content": "Hi there"}], max_tokens=20)
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Echo: Hi there"}
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_gseai_chat_completions_stream(student):
    chunks = list(student.chat_completions(TEXT, [{"role": "user", "content": "stream it"}], stream=True))
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == "Echo: stream it"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_gseai_completions(student):
    completion = student.completions(TEXT, "Once upon a time", max_tokens=10)
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "Echo: Once upon a time"


def test_gseai_completions_stream(student):
    chunks = list(student.completions(TEXT, "Tell a story", stream=True))
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == "Echo: Tell a story"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_gseai_embeddings(student):
    result = student.embeddings(EMBED, ["hello", "world", "hello"])
    vectors = [item["embedding"] for item in sorted(result["data"], key=lambda item: item["index"])]
    assert [len(vector) for vector in vectors] == [8, 8, 8]
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-4)


def test_gseai_responses(student):
    first = student.responses(TEXT, [{"role": "user", "content": "Remember seven"}])
    assert first["object"] == "response"
    assert first["output"][0]["content"][0]["text"] == "Echo: Remember seven"
    second = student.responses(TEXT, [{"role": "user", "content": "Which number?"}], previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    assert second["output"][0]["content"][0]["text"] == "Echo: Which number? (turn 2)"


def test_gseai_messages(student):
    message = student.messages(TEXT, [{"role": "user", "content": "Bonjour"}], 64, system="Be polite.")
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "Echo: Bonjour"}]
    assert message["stop_reason"] == "end_turn"


def test_lmstudio_v0_surface(http, gateway):
    headers = bearer(gateway.keys["alice"])
    listing = http.get("/api/v0/models", headers=headers)
    assert listing.status_code == 200, listing.text
    assert {model["id"] for model in listing.json()["data"]} == {VISION, TEXT, EMBED}
    one = http.get("/api/v0/models/stub%2Fembed", headers=headers)
    assert one.status_code == 200, one.text
    assert one.json()["id"] == EMBED
    completion = http.post("/api/v0/chat/completions", headers=headers,
                           json={"model": TEXT, "messages": [{"role": "user", "content": "v zero"}]})
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["message"]["content"] == "Echo: v zero"
    assert "stats" in completion.json()


# ---------------------------------------------------------------------------
# The `openai` SDK


def test_openai_models_list(oai):
    assert {model.id for model in oai.models.list()} == {VISION, TEXT, EMBED}


def image_message(text: str, png_data_url: str) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": png_data_url}},
    ]}]


def test_openai_chat_completion_with_an_image(oai, png_data_url):
    completion = oai.chat.completions.create(model=VISION, messages=image_message("Describe", png_data_url), max_tokens=50)
    assert completion.choices[0].message.content == "Echo: Describe [images: 1]"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0


def test_openai_chat_completion_stream_with_an_image(oai, png_data_url):
    stream = oai.chat.completions.create(model=VISION, messages=image_message("Describe it", png_data_url), stream=True)
    chunks = list(stream)
    assert len(chunks) > 2
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Echo: Describe it [images: 1]"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_completion(oai):
    completion = oai.completions.create(model=TEXT, prompt="Once upon a time", max_tokens=10)
    assert completion.choices[0].text == "Echo: Once upon a time"


def test_openai_embeddings_base64_by_default(oai):
    result = oai.embeddings.create(model=EMBED, input=["hello", "world"])
    vectors = [item.embedding for item in result.data]
    assert [len(vector) for vector in vectors] == [8, 8]
    floats = oai.embeddings.create(model=EMBED, input="hello", encoding_format="float").data[0].embedding
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(vectors[0], floats))


def test_openai_embeddings_raw_base64(http, gateway):
    """What the SDK receives: little-endian float32 in base64."""
    response = http.post("/v1/embeddings", headers=bearer(gateway.keys["alice"]),
                         json={"model": EMBED, "input": "hello", "encoding_format": "base64"})
    assert response.status_code == 200, response.text
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    floats = http.post("/v1/embeddings", headers=bearer(gateway.keys["alice"]),
                       json={"model": EMBED, "input": "hello", "encoding_format": "float"}).json()["data"][0]["embedding"]
    # The same vector, as little-endian float32.
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(struct.unpack("<8f", raw), floats, strict=True))


def test_openai_responses_with_continuation(oai):
    first = oai.responses.create(model=TEXT, input="Remember seven")
    assert first.output_text == "Echo: Remember seven"
    assert first.id.startswith("resp_")
    second = oai.responses.create(model=TEXT, input="Which number?", previous_response_id=first.id)
    assert second.output_text == "Echo: Which number? (turn 2)"
    assert second.previous_response_id == first.id


def test_openai_responses_of_another_user_is_not_found(oai, gateway):
    mine = oai.responses.create(model=TEXT, input="Mine only").id
    with openai_client(gateway, gateway.keys["ines"]) as other:
        with pytest.raises(openai.NotFoundError) as failure:
            other.responses.create(model=TEXT, input="Continue theirs", previous_response_id=mine)
    assert failure.value.status_code == 404
    assert failure.value.body["type"] == "not_found_error"


def test_openai_invalid_key_is_refused(gateway):
    with openai_client(gateway, "gsk_not-a-real-key") as client:
        with pytest.raises(openai.AuthenticationError) as failure:
            client.models.list()
    assert failure.value.status_code == 401
    assert failure.value.body["type"] == "authentication_error"


def test_openai_missing_key_is_refused(gateway):
    # The SDK insists on a key; the header is then left out of the request.
    with openai_client(gateway, "unused") as client:
        with pytest.raises(openai.AuthenticationError) as failure:
            client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"Authorization": openai.Omit()})
    assert failure.value.status_code == 401
    assert failure.value.body["type"] == "authentication_error"
    assert "missing or invalid credentials" in failure.value.body["message"]


def test_openai_upstream_error_is_502(oai):
    with pytest.raises(openai.APIStatusError) as failure:
        oai.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "please [[error]]"}])
    assert failure.value.status_code == 502
    assert failure.value.body["type"] == "upstream_error"
    assert failure.value.body["message"]


def test_openai_stream_cut_raises_during_iteration(oai):
    stream = oai.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "cut [[cut]] this stream short please"}],
                                         stream=True)
    received = []
    with pytest.raises(openai.APIError) as failure:
        for chunk in stream:
            received.append(chunk)
    assert received, "the part before the cut arrives"
    assert failure.value.message == "the model server's answer broke off"
    assert failure.value.body["type"] == "upstream_error"


# ---------------------------------------------------------------------------
# The `anthropic` SDK


def test_anthropic_messages_create(claude):
    message = claude.messages.create(model=TEXT, max_tokens=64, system="Be polite.",
                                     messages=[{"role": "user", "content": "Bonjour"}])
    assert message.content[0].text == "Echo: Bonjour"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


def test_anthropic_messages_stream(claude):
    with claude.messages.stream(model=TEXT, max_tokens=64, messages=[{"role": "user", "content": "Stream me"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: Stream me"
    assert final.content[0].text == "Echo: Stream me"
    assert final.stop_reason == "end_turn"


def test_anthropic_stream_cut_raises_an_error_event(claude):
    received = []
    with pytest.raises(anthropic.APIStatusError) as failure:
        with claude.messages.stream(model=TEXT, max_tokens=64,
                                    messages=[{"role": "user", "content": "cut [[cut]] this stream short please"}]) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert failure.value.body["type"] == "error"
    assert failure.value.body["error"]["type"] == "api_error"
    assert "broke off" in failure.value.body["error"]["message"]


def test_anthropic_invalid_key_is_refused(gateway):
    with anthropic_client(gateway, "gsk_not-a-real-key") as client:
        with pytest.raises(anthropic.AuthenticationError) as failure:
            client.messages.create(model=TEXT, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert failure.value.status_code == 401
    anthropic_error(failure.value.response, 401, "authentication_error")


def test_anthropic_missing_key_is_refused(gateway):
    with anthropic_client(gateway, None, default_headers={"Authorization": anthropic.Omit()}) as client:
        with pytest.raises(anthropic.AuthenticationError) as failure:
            client.messages.create(model=TEXT, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    anthropic_error(failure.value.response, 401, "authentication_error")


def test_anthropic_upstream_error(claude):
    with pytest.raises(anthropic.APIStatusError) as failure:
        claude.messages.create(model=TEXT, max_tokens=16, messages=[{"role": "user", "content": "please [[error]]"}])
    assert failure.value.status_code == 502
    anthropic_error(failure.value.response, 502, "api_error")


# ---------------------------------------------------------------------------
# The administrative CLI, end to end


def eventually(call, done, seconds=4.0):
    """Repeats `call` until `done(result)` or the time is up; returns the last result."""
    deadline = time.monotonic() + seconds
    result = call()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.2)
        result = call()
    return result


def test_cli_user_lifecycle(gateway, http):
    bob = f"bob{uuid.uuid4().hex[:8]}"  # a fresh name: the gateway is shared by the whole run
    password = gateway.add_user(bob, "student")
    assert len(password) >= 8
    rows = user_rows(gateway)
    assert rows[bob][1:3] == ["student", "active"]
    assert rows["admin"][1] == "admin" and rows["alice"][1] == "student" and rows["ines"][1] == "instructor"

    key = gateway.create_key(bob, label="notebook")
    assert http.get("/v1/models", headers=bearer(key)).status_code == 200
    load = {"model": TEXT, "ttl": 60}
    openai_error(http.post("/api/v1/models/load", headers=bearer(key), json=load), 403, "permission_error")

    assert "instructor" in gateway.admin_ok("user", "set-role", bob, "instructor")
    rows = user_rows(gateway)
    assert rows[bob][1] == "instructor"
    # A change made with the CLI (another process) reaches the running gateway's key cache within 2 s.
    loaded = eventually(lambda: http.post("/api/v1/models/load", headers=bearer(key), json=load),
                        lambda r: r.status_code == 200)
    assert loaded.status_code == 200, loaded.text
    assert http.post("/api/v1/models/unload", headers=bearer(key), json={"model": TEXT}).status_code == 200

    gateway.admin_ok("user", "disable", bob)
    rows = user_rows(gateway)
    assert rows[bob][2] == "disabled"
    refused_key = eventually(lambda: http.get("/v1/models", headers=bearer(key)), lambda r: r.status_code == 401)
    openai_error(refused_key, 401, "authentication_error")
    anthropic_error(http.post("/v1/messages", headers={"x-api-key": key},
                              json={"model": TEXT, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
                    401, "authentication_error")
    refused = http.post("/auth/login", json={"username": bob, "password": password})
    assert refused.status_code == 401


def test_cli_refuses_a_duplicate_user_and_an_unknown_one(gateway):
    duplicate = gateway.admin("user", "add", "alice", "--role", "student")
    assert duplicate.returncode != 0
    assert duplicate.stderr.strip().splitlines()[-1].startswith("Error:")
    unknown = gateway.admin("key", "create", "nobody-here")
    assert unknown.returncode != 0
    assert unknown.stdout == ""


def test_cli_password_stdin_and_reset(gateway):
    chosen = "correct horse battery staple"
    carol = f"carol{uuid.uuid4().hex[:8]}"
    gateway.admin_ok("user", "add", carol, "--role", "student", "--password-stdin", input=chosen + "\n")
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as browser:
        assert browser.post("/auth/login", json={"username": carol, "password": chosen}).status_code == 200
        output = gateway.admin_ok("user", "reset-password", carol)
        new = output.split("password: ", 1)[1].split()[0]
        # Resetting ends the sessions.
        assert browser.get("/auth/me").status_code == 401
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as browser:
        assert browser.post("/auth/login", json={"username": carol, "password": chosen}).status_code == 401
        assert browser.post("/auth/login", json={"username": carol, "password": new}).status_code == 200


def test_admin_first_run_password_logs_in(gateway):
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as browser:
        response = browser.post("/auth/login", json={"username": "admin", "password": gateway.admin_password})
        assert response.status_code == 200, response.text
        assert response.json()["user"]["role"] == "admin"


# ---------------------------------------------------------------------------
# The account API with a session cookie


def test_account_api_keys_with_a_session(gateway, http):
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as browser:
        wrong = browser.post("/auth/login", json={"username": "alice", "password": "not her password"})
        assert wrong.status_code == 401
        login = browser.post("/auth/login", json={"username": "alice", "password": gateway.passwords["alice"]})
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("gseai_session=") and "httponly" in cookie.lower()
        csrf = login.json()["csrf_token"]
        assert csrf

        me = browser.get("/auth/me").json()
        assert me["user"]["username"] == "alice"
        assert me["user"]["role"] == "student"
        assert me["authenticated_with"] == "session"

        # An unsafe request with the cookie alone is refused.
        refused = browser.post("/auth/keys", json={"label": "laptop"})
        assert refused.status_code == 403, refused.text
        created = browser.post("/auth/keys", json={"label": "laptop"}, headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text
        key, record = created.json()["key"], created.json()["api_key"]
        assert key.startswith("gsk_") and record["label"] == "laptop"
        assert record["id"] in {item["id"] for item in browser.get("/auth/keys").json()["data"]}

        works = http.get("/auth/me", headers=bearer(key))
        assert works.json()["user"]["username"] == "alice"
        assert works.json()["authenticated_with"] == "api_key"
        with openai_client(gateway, key) as client:
            answer = client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": "with my new key"}])
            assert answer.choices[0].message.content == "Echo: with my new key"

        assert browser.delete(f"/auth/keys/{record['id']}").status_code == 403  # no CSRF header
        revoked = browser.delete(f"/auth/keys/{record['id']}", headers={"X-CSRF-Token": csrf})
        assert revoked.status_code == 204, revoked.text
        openai_error(http.get("/v1/models", headers=bearer(key)), 401, "authentication_error")
        listed = {item["id"]: item for item in browser.get("/auth/keys").json()["data"]}
        assert listed[record["id"]]["revoked_at"]

        sessions = browser.get("/auth/sessions").json()["data"]
        assert [session["current"] for session in sessions].count(True) == 1
        assert browser.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert browser.get("/auth/me").status_code == 401


def test_someone_elses_key_cannot_be_revoked(gateway):
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as browser:
        login = browser.post("/auth/login", json={"username": "ines", "password": gateway.passwords["ines"]})
        csrf = login.json()["csrf_token"]
        with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as alice:
            alice_keys = alice.get("/auth/keys", headers=bearer(gateway.keys["alice"])).json()["data"]
        assert alice_keys
        refused = browser.delete(f"/auth/keys/{alice_keys[0]['id']}", headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 404
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as alice:
        assert alice.get("/v1/models", headers=bearer(gateway.keys["alice"])).status_code == 200


def test_anonymous_requests_are_refused_in_each_format(http):
    openai_error(http.get("/v1/models"), 401, "authentication_error")
    openai_error(http.post("/api/v1/chat", json={"model": TEXT, "input": "hi"}), 401, "authentication_error")
    anthropic_error(http.post("/v1/messages", json={"model": TEXT, "max_tokens": 8, "messages": []}), 401,
                    "authentication_error")
    assert http.get("/auth/me").status_code == 401


def test_operations_endpoints(http):
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text


# ---------------------------------------------------------------------------
# Over a real llama.cpp server (kind openai)


@pytest.fixture(scope="module")
def llama_oai(gateway_over_llama):
    with openai.OpenAI(base_url=f"{gateway_over_llama.base_url}/v1", api_key=gateway_over_llama.keys["alice"],
                       max_retries=0, timeout=120) as client:
        yield client


def test_llama_models_list(llama_oai):
    assert LLAMA_MODEL in {model.id for model in llama_oai.models.list()}


def test_llama_chat_completion(llama_oai):
    completion = llama_oai.chat.completions.create(
        model=LLAMA_MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    assert completion.choices[0].message.content.strip()
    assert 0 < completion.usage.completion_tokens <= 16


def test_llama_chat_completion_stream(llama_oai):
    stream = llama_oai.chat.completions.create(
        model=LLAMA_MODEL, messages=[{"role": "user", "content": "Count to three."}], max_tokens=16, stream=True
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    assert any(chunk.choices and chunk.choices[0].finish_reason for chunk in chunks)


def test_llama_completion(llama_oai):
    completion = llama_oai.completions.create(model=LLAMA_MODEL, prompt="The capital of France is", max_tokens=16)
    assert completion.choices[0].text.strip()


def test_llama_through_the_real_gseai_client(gateway_over_llama):
    """The Python client's OpenAI-compatible methods reach llama.cpp; its LM Studio methods get a clear 501."""
    server = gateway_over_llama
    with gseai.GSEAIServer(api_token=server.keys["alice"], host=server.host, port=server.port) as client:
        assert LLAMA_MODEL in {model["id"] for model in client.list_models_openai()["data"]}
        completion = client.chat_completions(LLAMA_MODEL, [{"role": "user", "content": "Say hello."}], max_tokens=16)
        assert completion["choices"][0]["message"]["content"].strip()
        assert 0 < completion["usage"]["completion_tokens"] <= 16
        chunks = list(client.chat_completions(LLAMA_MODEL, [{"role": "user", "content": "Count to three."}],
                                              max_tokens=16, stream=True))
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
        assert client.completions(LLAMA_MODEL, "The capital of France is", max_tokens=8)["choices"][0]["text"].strip()
        with pytest.raises(httpx.HTTPStatusError) as native:
            client.chat(LLAMA_MODEL, "hi")
        message = openai_error(native.value.response, 501)
        assert "speaks only the OpenAI-compatible API" in message, message


def test_llama_native_and_anthropic_surfaces_are_501(gateway_over_llama):
    with httpx.Client(base_url=gateway_over_llama.base_url, timeout=TIMEOUT) as http:
        key = gateway_over_llama.keys["alice"]
        openai_error(http.post("/api/v1/chat", headers=bearer(key), json={"model": LLAMA_MODEL, "input": "hi"}), 501)
        openai_error(http.get("/api/v1/models", headers=bearer(key)), 501)
        anthropic_error(http.post("/v1/messages", headers={"x-api-key": key},
                                  json={"model": LLAMA_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
                        501)
