"""The real Python client, `gseai.GSEAIServer` 0.1.2, through every method against `gseai-stub`.

If the stub answers this client correctly, it is a faithful stand-in for the GSE AI server.
"""

from __future__ import annotations

import base64
import math
import struct

import gseai
import httpx
import pytest

from helpers import EMBED, TEXT, VISION, chat_text


@pytest.fixture(scope="module")
def client(stub):
    with gseai.GSEAIServer(stub.token, host=stub.host, port=stub.port) as server:
        yield server


def loaded_instances(client, model: str) -> list:
    models = {entry["key"]: entry for entry in client.list_models()["models"]}
    return models[model]["loaded_instances"]


# Native API v1: models


def test_list_models(client):
    models = {entry["key"]: entry for entry in client.list_models()["models"]}
    assert set(models) == {VISION, TEXT, EMBED}
    assert models[VISION]["capabilities"]["vision"] is True
    assert models[TEXT]["capabilities"]["vision"] is False
    assert models[EMBED]["type"] == "embedding"
    assert models[TEXT]["type"] == "llm"


def test_load_with_ttl_then_unload(client):
    loaded = client.load_model(TEXT, ttl=300)
    assert loaded["status"] == "loaded"
    assert loaded["instance_id"] == TEXT
    assert loaded["ttl"] == 300
    assert [instance["id"] for instance in loaded_instances(client, TEXT)] == [TEXT]

    unloaded = client.unload_model(TEXT)
    assert unloaded == {"instance_id": TEXT, "status": "unloaded"}
    assert loaded_instances(client, TEXT) == []


def test_unload_of_a_model_not_loaded_is_404(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.unload_model(EMBED)
    assert failure.value.response.status_code == 404
    assert "error" in failure.value.response.json()


def test_download_polled_until_completed(client):
    started = client.download_model("someone/new-model-GGUF")
    assert started["status"] == "downloading"
    job = started["job_id"]
    statuses, downloaded = [], []
    for _ in range(10):
        status = client.get_download_status(job)
        assert status["job_id"] == job
        statuses.append(status["status"])
        downloaded.append(status["downloaded_bytes"])
        if status["status"] == "completed":
            break
    assert statuses == ["downloading", "downloading", "downloading", "completed"]
    assert downloaded == sorted(downloaded) and downloaded[-1] == status["total_size_bytes"]


def test_download_of_a_model_already_there(client):
    assert client.download_model(TEXT) == {"status": "already_downloaded"}


def test_download_status_of_an_unknown_job_is_404(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.get_download_status("job_unknown")
    assert failure.value.response.status_code == 404


# Native API v1: chat


def test_chat_text(client):
    response = client.chat(TEXT, "hello there", system_prompt="Be brief.", temperature=0.2, max_output_tokens=50)
    assert chat_text(response) == "Echo: hello there"
    assert response["model_instance_id"] == TEXT
    assert response["response_id"].startswith("resp_")
    assert response["stats"]["input_tokens"] == 2
    assert response["stats"]["total_output_tokens"] > 0


def test_chat_items_with_an_image(client, png_data_url):
    response = client.chat(
        VISION,
        [{"type": "message", "content": "What is in this picture?"}, {"type": "image", "data_url": png_data_url}],
    )
    assert chat_text(response) == "Echo: What is in this picture? [images: 1]"


def test_chat_items_with_two_images(client, png_data_url):
    image = {"type": "image", "data_url": png_data_url}
    response = client.chat(VISION, [{"type": "message", "content": "Compare"}, image, image])
    assert chat_text(response) == "Echo: Compare [images: 2]"


def test_chat_image_to_a_text_model_is_rejected(client, png_data_url):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.chat(TEXT, [{"type": "message", "content": "Look"}, {"type": "image", "data_url": png_data_url}])
    assert failure.value.response.status_code == 400


def test_chat_invalid_image_is_rejected(client):
    bad = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.chat(VISION, [{"type": "message", "content": "Look"}, {"type": "image", "data_url": bad}])
    assert failure.value.response.status_code == 400


def test_chat_stream(client):
    events = list(client.chat(TEXT, "stream this please", stream=True))
    types = [event["type"] for event in events]
    assert types[0] == "chat.start"
    assert types[-1] == "chat.end"
    assert "message.start" in types and "message.end" in types
    assert types.count("message.delta") > 1
    text = "".join(event["content"] for event in events if event["type"] == "message.delta")
    assert text == "Echo: stream this please"
    result = events[-1]["result"]
    assert chat_text(result) == text
    assert result["response_id"].startswith("resp_")


def test_chat_stream_with_an_image(client, png_data_url):
    events = list(
        client.chat(VISION, [{"type": "message", "content": "Describe"}, {"type": "image", "data_url": png_data_url}],
                    stream=True)
    )
    text = "".join(event["content"] for event in events if event["type"] == "message.delta")
    assert text == "Echo: Describe [images: 1]"


def test_chat_continues_a_stored_response(client):
    first = client.chat(TEXT, "My name is Ada.")
    assert chat_text(first) == "Echo: My name is Ada."
    second = client.chat(TEXT, "What is my name?", previous_response_id=first["response_id"])
    assert chat_text(second) == "Echo: What is my name? (turn 2)"
    assert second["response_id"] != first["response_id"]
    events = list(client.chat(TEXT, "And again?", previous_response_id=second["response_id"], stream=True))
    text = "".join(event["content"] for event in events if event["type"] == "message.delta")
    assert text == "Echo: And again? (turn 3)"


def test_chat_with_store_false_gives_no_response_id(client):
    response = client.chat(TEXT, "forget me", store=False)
    assert chat_text(response) == "Echo: forget me"
    assert "response_id" not in response


def test_chat_continuing_an_unknown_response_is_404(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.chat(TEXT, "hello", previous_response_id="resp_unknown")
    assert failure.value.response.status_code == 404


def test_chat_unknown_model_is_404(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.chat("nobody/nothing", "hello")
    assert failure.value.response.status_code == 404


# Native API v1: faults the prompt asks for


def test_chat_error_fault(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.chat(TEXT, "please [[error]]")
    assert failure.value.response.status_code == 500
    assert failure.value.response.json()["error"]["message"]


def test_chat_stream_error_fault_ends_with_chat_end(client):
    events = list(client.chat(TEXT, "please [[error]]", stream=True))
    types = [event["type"] for event in events]
    assert types[0] == "chat.start"
    assert "error" in types
    assert types[-1] == "chat.end"
    assert "message.delta" not in types
    error = next(event for event in events if event["type"] == "error")
    assert error["error"]["message"]


def test_chat_stream_cut_fault_has_no_chat_end(client):
    events = list(client.chat(TEXT, "cut [[cut]] this stream short", stream=True))
    types = [event["type"] for event in events]
    assert types[0] == "chat.start"
    assert "chat.end" not in types


def test_chat_stream_drop_fault_breaks_the_connection(client):
    with pytest.raises(httpx.HTTPError):
        list(client.chat(TEXT, "drop [[drop]] this stream", stream=True))


def test_chat_stream_slow_fault_still_completes(client):
    events = list(client.chat(TEXT, "[[slow]]", stream=True))
    assert events[-1]["type"] == "chat.end"
    assert "".join(e["content"] for e in events if e["type"] == "message.delta") == "Echo: [[slow]]"


def test_wrong_token_is_401_json(stub):
    # A client of its own, so that the shared one stays authenticated.
    with gseai.GSEAIServer("wrong-token", host=stub.host, port=stub.port) as bad:
        with pytest.raises(httpx.HTTPStatusError) as failure:
            bad.list_models()
    assert failure.value.response.status_code == 401
    assert failure.value.response.json()["error"]["message"]


# OpenAI-compatible API


def test_list_models_openai(client):
    listing = client.list_models_openai()
    assert listing["object"] == "list"
    assert {model["id"] for model in listing["data"]} == {VISION, TEXT, EMBED}
    assert all(model["object"] == "model" for model in listing["data"])


def test_chat_completions(client):
    completion = client.chat_completions(
        TEXT, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        temperature=0.5, max_tokens=20,
    )
    assert completion["object"] == "chat.completion"
    choice = completion["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo: Hi there"}
    assert choice["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] > 0


def test_chat_completions_counts_turns_and_images(client, png_data_url):
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": [
            {"type": "text", "text": "second"},
            {"type": "image_url", "image_url": {"url": png_data_url}},
        ]},
    ]
    completion = client.chat_completions(VISION, messages)
    assert completion["choices"][0]["message"]["content"] == "Echo: second [images: 1] (turn 2)"


def test_chat_completions_stream(client):
    chunks = list(client.chat_completions(TEXT, [{"role": "user", "content": "stream it"}], stream=True))
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == "Echo: stream it"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_completions_error_fault(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.chat_completions(TEXT, [{"role": "user", "content": "[[error]]"}])
    assert failure.value.response.status_code == 500


def test_completions(client):
    completion = client.completions(TEXT, "Once upon a time", max_tokens=10)
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "Echo: Once upon a time"
    assert completion["usage"]["prompt_tokens"] == 4


def test_completions_stream(client):
    chunks = list(client.completions(TEXT, "Tell a story", stream=True))
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == "Echo: Tell a story"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_embeddings(client):
    result = client.embeddings(EMBED, ["hello", "world", "hello"])
    assert result["object"] == "list"
    assert result["model"] == EMBED
    vectors = [item["embedding"] for item in sorted(result["data"], key=lambda item: item["index"])]
    assert len(vectors) == 3
    assert len({len(vector) for vector in vectors}) == 1 and len(vectors[0]) > 0
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-4)


def test_embeddings_base64(client):
    floats = client.embeddings(EMBED, "hello")["data"][0]["embedding"]
    encoded = client.embeddings(EMBED, "hello", encoding_format="base64")["data"][0]["embedding"]
    raw = base64.b64decode(encoded)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == len(floats)
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(decoded, floats))


def test_embeddings_need_an_embedding_model(client):
    with pytest.raises(httpx.HTTPStatusError) as failure:
        client.embeddings(TEXT, "hello")
    assert failure.value.response.status_code == 404


def test_responses(client):
    first = client.responses(TEXT, [{"role": "user", "content": "Remember seven"}])
    assert first["object"] == "response"
    assert first["status"] == "completed"
    assert first["id"].startswith("resp_")
    message = first["output"][0]
    assert message["role"] == "assistant"
    assert message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"] == "Echo: Remember seven"

    second = client.responses(TEXT, [{"role": "user", "content": "Which number?"}], previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    assert second["output"][0]["content"][0]["text"] == "Echo: Which number? (turn 2)"


def test_messages(client):
    message = client.messages(TEXT, [{"role": "user", "content": "Bonjour"}], 64, system="Be polite.", temperature=0.3)
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "Echo: Bonjour"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] > 0


def test_messages_with_an_image(client, png_data_url):
    data = png_data_url.split(",", 1)[1]
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "text", "text": "What colour?"},
    ]
    message = client.messages(VISION, [{"role": "user", "content": content}], 64)
    assert message["content"][0]["text"] == "Echo: What colour? [images: 1]"
