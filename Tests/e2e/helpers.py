"""Shared constants and HTTP helpers of the end-to-end suite (a plain module, not a test module).

The model names the stub serves, the time limits shared by several modules, and small helpers for talking to
the gateway over HTTP outside the browser: a login session, the status of a request, the `Authorization`
header of a key, the shapes of OpenAI and Anthropic errors, and an instructor's session for the class API.
"""

from __future__ import annotations

import httpx

# The stub's models (`gseai-stub`), and the model the llama.cpp server serves.
VISION = "stub/echo-vl"
TEXT = "stub/echo-text"
EMBED = "stub/embed"
STUB_MODELS = {VISION, TEXT, EMBED}
LLAMA_MODEL = "gemma-3-270m"

WAIT = 15        # seconds for anything the stub drives
USAGE_WAIT = 10  # seconds: usage is written at most a second after an answer; the roster is re-read until then


# ---------------------------------------------------------------------------
# Requests


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def session(base_url: str, username: str, password: str, agent: str = "e2e-httpx") -> httpx.Client:
    """A login session outside the browser (its own cookie and CSRF token), with a User-Agent to spot it by."""
    client = httpx.Client(base_url=base_url, timeout=WAIT, headers={"User-Agent": agent})
    login = client.post("/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    return client


def status(answer: httpx.Response) -> tuple[int, str]:
    """The status and, for an error, the gateway's message."""
    return answer.status_code, "" if answer.is_success else answer.json()["error"]["message"]


def login_status(base_url: str, username: str, password: str) -> tuple[int, str]:
    return status(httpx.post(f"{base_url}/auth/login", json={"username": username, "password": password}, timeout=WAIT))


def key_status(base_url: str, key: str) -> tuple[int, str]:
    return status(httpx.get(f"{base_url}/v1/models", headers=bearer(key), timeout=WAIT))


# ---------------------------------------------------------------------------
# Answers


def chat_text(response: dict) -> str:
    """The text of an LM Studio `/api/v1/chat` answer."""
    return "".join(item["content"] for item in response["output"] if item["type"] == "message")


def openai_error(response: httpx.Response, status: int, kind: str | None = None) -> str:
    """Asserts an OpenAI-shaped error (`{"error":{"message","type","code"}}`); returns its message."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error), error
    assert error["message"]
    if kind is not None:
        assert error["type"] == kind, error
    return error["message"]


def anthropic_error(response: httpx.Response, status: int, kind: str | None = None) -> str:
    """Asserts an Anthropic-shaped error (`{"type":"error","error":{"type","message"}}`); returns its message."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    assert body["type"] == "error", body
    assert body["error"]["message"]
    if kind is not None:
        assert body["error"]["type"] == kind, body
    return body["error"]["message"]


# ---------------------------------------------------------------------------
# Classes


class InstructorAPI:
    """An instructor's session for the JSON API, to set up classes without the console."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=WAIT)
        login = self.client.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        self.client.headers["X-CSRF-Token"] = login.json()["csrf_token"]

    def create_class(self, name: str, **policy) -> dict:
        made = self.client.post("/api/classes", json={"name": name, "policy": policy})
        assert made.status_code == 201, made.text
        return made.json()

    def close_class(self, class_id: str) -> None:
        closed = self.client.post(f"/api/classes/{class_id}/close")
        assert closed.status_code == 200, closed.text
        assert closed.json()["is_active"] is False


def add_member(teacher: InstructorAPI, class_id: str, username: str) -> str:
    """Adds an existing student with a one-line roster; returns their user id."""
    added = teacher.client.post(f"/api/classes/{class_id}/roster", content=f"{username}\n",
                                headers={"Content-Type": "text/csv"})
    assert added.status_code == 200 and added.json()["added"] == [username], added.text
    members = teacher.client.get(f"/api/classes/{class_id}/members").json()["data"]
    return next(m["user_id"] for m in members if m["username"] == username)
