"""The `gseai` command line, run as a user runs it: against the stub, and against a real llama.cpp server."""

from __future__ import annotations

import json
import re
import select
import subprocess
import time

import pytest

from helpers import EMBED, LLAMA_MODEL, TEXT, VISION


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def failed(result: subprocess.CompletedProcess) -> str:
    """Asserts a failure explained on stderr; returns its `Error:` line."""
    assert result.returncode != 0, f"exit 0\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error:"), f"stderr: {result.stderr!r}"
    return lines[-1]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """Asserts bad input was refused with exactly one `Error:` line and nothing on stdout."""
    line = failed(result)
    assert result.stderr.strip() == line, f"more than one line on stderr: {result.stderr!r}"
    assert result.stdout == ""
    return line


def response_id(stderr: str) -> str:
    match = re.search(r"^response id: (resp_\S+)$", stderr, re.MULTILINE)
    assert match, f"no response id on stderr: {stderr!r}"
    return match.group(1)


# models


def test_models_table(cli):
    result = ok(cli("models"))
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "MODEL"
    keys = [line.split()[0] for line in lines[1:]]
    assert keys == [VISION, TEXT, EMBED]


def test_models_json(cli):
    listing = json.loads(ok(cli("models", "--json")).stdout)
    models = {model["key"]: model for model in listing["models"]}
    assert set(models) == {VISION, TEXT, EMBED}
    assert models[VISION]["capabilities"]["vision"] is True


def test_models_openai(cli):
    result = ok(cli("models", "--api", "openai"))
    assert [line.strip() for line in result.stdout.splitlines()[1:]] == [VISION, TEXT, EMBED]
    listing = json.loads(ok(cli("models", "--api", "openai", "--json")).stdout)
    assert [model["id"] for model in listing["data"]] == [VISION, TEXT, EMBED]


def test_token_from_the_environment(cli, stub):
    result = ok(cli("models", token=None, env={"GSEAI_API_TOKEN": stub.token}))
    assert TEXT in result.stdout


def test_wrong_token(cli):
    line = failed(cli("models", token="wrong-token"))
    assert "401" in line or "token" in line.lower()


# chat, native API


def test_chat_streams_the_answer(cli):
    result = ok(cli("chat", TEXT, "hello world"))
    assert result.stdout.strip() == "Echo: hello world"
    assert "tokens in" in result.stderr
    assert response_id(result.stderr).startswith("resp_")


def test_chat_prints_tokens_as_they_arrive(gseai_bin, stub):
    # With [[slow]] the stub waits 200 ms between events: the first words must show before the end.
    process = subprocess.Popen(
        [str(gseai_bin), "chat", TEXT, "one two three four five six [[slow]]",
         "--base-url", stub.base_url, "--token", stub.token],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        started = time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "no output within 30 s"
        first = process.stdout.read1(64)  # what has arrived so far
        assert first.startswith(b"Echo")
        assert process.poll() is None, "the CLI had already finished: the answer was not streamed"
        rest, _ = process.communicate(timeout=30)
        assert (first + rest).decode().strip() == "Echo: one two three four five six [[slow]]"
        assert time.monotonic() - started > 1
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_chat_with_an_image(cli, png_file):
    result = ok(cli("chat", VISION, "What is this?", "--image", str(png_file)))
    assert result.stdout.strip() == "Echo: What is this? [images: 1]"


def test_chat_with_two_images(cli, png_file):
    result = ok(cli("chat", VISION, "Compare", "--image", str(png_file), "--image", str(png_file)))
    assert result.stdout.strip() == "Echo: Compare [images: 2]"


def test_chat_continues_a_response(cli):
    first = ok(cli("chat", TEXT, "My name is Ada."))
    assert first.stdout.strip() == "Echo: My name is Ada."
    second = ok(cli("chat", TEXT, "What is my name?", "--continue", response_id(first.stderr)))
    assert second.stdout.strip() == "Echo: What is my name? (turn 2)"
    third = ok(cli("chat", TEXT, "Again?", "--no-stream", "--continue", response_id(second.stderr)))
    assert third.stdout.strip() == "Echo: Again? (turn 3)"


def test_chat_continuing_an_unknown_response_fails(cli):
    line = failed(cli("chat", TEXT, "hello", "--continue", "resp_unknown"))
    assert "404" in line or "not found" in line


def test_chat_with_system_and_sampling_options(cli):
    result = ok(cli("chat", TEXT, "hi", "--system", "Be brief.", "--max-tokens", "20", "--temperature", "0.2"))
    assert result.stdout.strip() == "Echo: hi"


def test_chat_no_stream(cli, png_file):
    result = ok(cli("chat", VISION, "Describe", "--image", str(png_file), "--no-stream"))
    assert result.stdout.strip() == "Echo: Describe [images: 1]"
    assert "tokens in" in result.stderr
    assert response_id(result.stderr).startswith("resp_")


def test_chat_no_stream_json(cli):
    response = json.loads(ok(cli("chat", TEXT, "as json", "--no-stream", "--json")).stdout)
    assert response["output"] == [{"type": "message", "content": "Echo: as json"}]
    assert response["response_id"].startswith("resp_")
    assert response["stats"]["total_output_tokens"] > 0


def test_chat_stream_json(cli):
    events = [json.loads(line) for line in ok(cli("chat", TEXT, "as events", "--json")).stdout.splitlines()]
    types = [event["type"] for event in events]
    assert types[0] == "chat.start" and types[-1] == "chat.end"
    assert "".join(e["content"] for e in events if e["type"] == "message.delta") == "Echo: as events"
    assert events[-1]["result"]["output"][0]["content"] == "Echo: as events"


def test_chat_unknown_model_fails(cli):
    line = failed(cli("chat", "nobody/nothing", "hello"))
    assert "404" in line or "not found" in line


# chat, OpenAI-compatible API


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_chat_openai(cli, png_file, stream):
    args = ["chat", VISION, "What is this?", "--api", "openai", "--image", str(png_file)]
    result = ok(cli(*args, *([] if stream else ["--no-stream"])))
    assert result.stdout.strip() == "Echo: What is this? [images: 1]"
    assert "response id" not in result.stderr


def test_chat_openai_json(cli):
    completion = json.loads(ok(cli("chat", TEXT, "hi", "--api", "openai", "--no-stream", "--json")).stdout)
    assert completion["choices"][0]["message"]["content"] == "Echo: hi"
    chunks = [json.loads(line) for line in ok(cli("chat", TEXT, "hi", "--api", "openai", "--json")).stdout.splitlines()]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Echo: hi"


# faults


@pytest.mark.parametrize("mode", [[], ["--no-stream"], ["--api", "openai"], ["--api", "openai", "--no-stream"]],
                         ids=["native-stream", "native", "openai-stream", "openai"])
def test_chat_server_error(cli, mode):
    line = failed(cli("chat", TEXT, "please [[error]]", *mode))
    assert "stub failure" in line


def test_chat_stream_cut_short_fails(cli):
    failed(cli("chat", TEXT, "one two three four five [[cut]]"))


def test_chat_stream_dropped_fails(cli):
    failed(cli("chat", TEXT, "one two three four five [[drop]]"))


# bad input: one line on stderr, no request needed


def test_missing_image_file(cli, tmp_path):
    line = one_error_line(cli("chat", VISION, "hi", "--image", str(tmp_path / "missing.png")))
    assert "missing.png" in line


def test_file_that_is_not_an_image(cli, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("just some text, not a picture\n")
    line = one_error_line(cli("chat", VISION, "hi", "--image", str(text)))
    assert "notes.png" in line


def test_no_token(cli):
    line = one_error_line(cli("chat", TEXT, "hi", token=None))
    assert "token" in line.lower()


# model management


def test_load_and_unload(cli):
    loaded = ok(cli("load", EMBED, "--ttl", "60"))
    assert f"loaded {EMBED}" in loaded.stdout
    models = {m["key"]: m for m in json.loads(ok(cli("models", "--json")).stdout)["models"]}
    assert models[EMBED]["loaded_instances"]
    table = {line.split()[0]: line.split() for line in ok(cli("models")).stdout.splitlines()[1:]}
    assert table[EMBED][2] == "yes"

    unloaded = ok(cli("unload", EMBED))
    assert f"unloaded {EMBED}" in unloaded.stdout
    models = {m["key"]: m for m in json.loads(ok(cli("models", "--json")).stdout)["models"]}
    assert models[EMBED]["loaded_instances"] == []

    line = failed(cli("unload", EMBED))
    assert "404" in line or "no loaded instance" in line


def test_load_json(cli):
    result = json.loads(ok(cli("load", TEXT, "--ttl", "30", "--json")).stdout)
    assert result["status"] == "loaded"
    assert result["instance_id"] == TEXT
    ok(cli("unload", TEXT))


def test_download_shows_progress_until_completed(cli):
    result = ok(cli("download", "someone/new-model-GGUF", "--interval", "0.05"))
    for percent in ("25%", "50%", "75%", "100%"):
        assert percent in result.stderr, result.stderr
    assert "completed" in result.stdout.splitlines()[-1]


def test_download_json(cli):
    statuses = [json.loads(line) for line in ok(cli("download", "someone/other-GGUF", "--interval", "0.05",
                                                    "--json")).stdout.splitlines()]
    assert statuses[0]["job_id"]
    assert statuses[-1]["status"] == "completed"
    assert statuses[-1]["downloaded_bytes"] == statuses[-1]["total_size_bytes"]


def test_download_of_a_model_already_there(cli):
    result = ok(cli("download", TEXT, "--interval", "0.05"))
    assert "already downloaded" in result.stdout


# against a real llama.cpp server


def test_llama_models(llama_cli):
    result = ok(llama_cli("models", "--api", "openai"))
    assert LLAMA_MODEL in result.stdout.split()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_llama_chat(llama_cli, stream):
    args = ["chat", LLAMA_MODEL, "Say hello", "--api", "openai", "--max-tokens", "16"]
    result = ok(llama_cli(*args, *([] if stream else ["--no-stream"]), timeout=180))
    assert result.stdout.strip(), f"empty answer; stderr: {result.stderr}"
