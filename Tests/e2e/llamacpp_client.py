"""The calls of seed 002's `LlamaCppClient` (llamatelemetry, not on PyPI), made over httpx: each method sends
what that client sends (method, path, query, body) to its base URL and answers the server's JSON as it came,
so that the tests can look at every field. Streams are read as that client reads them: `data:` lines until
`[DONE]` or the end of the body.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx


class LlamaCppClient:
    """`LlamaCppClient(base_url, api_key)`: `…/llamacpp` on the gateway, or a llama.cpp server's address."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0):
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.chat = _Chat(self)
        self.embeddings = _Embeddings(self)
        self.models = _Models(self)
        self.slots = _Slots(self)
        self.lora = _Lora(self)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "LlamaCppClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # The seed's `_request`: raise on a status of 400 or more, then the JSON (or the stream).
    def request(self, method: str, path: str, json_data: Any = None, params: dict | None = None,
                stream: bool = False) -> Any:
        if stream:
            return self._stream(method, path, json_data, params)
        response = self.http.request(method, path, json=json_data, params=params)
        response.raise_for_status()
        return response.json()

    def _stream(self, method: str, path: str, json_data: Any, params: dict | None) -> Iterator[dict]:
        with self.http.stream(method, path, json=json_data, params=params) as response:
            if response.status_code >= 400:
                response.read()
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    break
                try:
                    yield json.loads(data)
                except json.JSONDecodeError:
                    continue

    # Health and server
    def health(self) -> dict:
        try:
            return self.request("GET", "/health")
        except httpx.HTTPStatusError as error:
            if error.response.status_code == 503:
                return {"status": "loading"}
            raise

    def is_ready(self) -> bool:
        try:
            return self.health().get("status") == "ok"
        except Exception:
            return False

    def wait_until_ready(self, timeout: float = 60.0, poll_interval: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return True
            time.sleep(poll_interval)
        return False

    def props(self) -> dict:
        return self.request("GET", "/props")

    def set_props(self, **kwargs) -> dict:
        return self.request("POST", "/props", json_data=kwargs)

    def metrics(self) -> str:
        response = self.http.get("/metrics")
        response.raise_for_status()
        return response.text

    # Generation
    def chat_completion(self, messages: list[dict], **kwargs):
        return self.chat.completions.create(messages=messages, **kwargs)

    def complete(self, prompt, n_predict: int = -1, temperature: float = 0.8, stream: bool = False, **kwargs):
        data = {"prompt": prompt, "n_predict": n_predict, "temperature": temperature, "top_k": 40, "top_p": 0.95,
                "min_p": 0.05, "repeat_penalty": 1.1, "repeat_last_n": 64, "seed": -1, "stream": stream,
                "cache_prompt": True, "n_probs": 0, "id_slot": -1, "return_tokens": False}
        data.update(kwargs)
        return self.request("POST", "/completion", json_data=data, stream=stream)

    def simple_completion(self, prompt: str, **kwargs) -> str:
        return self.complete(prompt, **kwargs).get("content", "")

    def infill(self, input_prefix: str, input_suffix: str, input_extra: list | None = None, prompt: str | None = None,
               stream: bool = False, **kwargs):
        data = {"input_prefix": input_prefix, "input_suffix": input_suffix, "stream": stream, **kwargs}
        if input_extra:
            data["input_extra"] = input_extra
        if prompt:
            data["prompt"] = prompt
        return self.request("POST", "/infill", json_data=data, stream=stream)

    # Tokens, template, embeddings, reranking
    def tokenize(self, content: str, add_special: bool = False, parse_special: bool = True,
                 with_pieces: bool = False) -> list:
        data = self.request("POST", "/tokenize", json_data={"content": content, "add_special": add_special,
                                                            "parse_special": parse_special, "with_pieces": with_pieces})
        return data["tokens"]

    def detokenize(self, tokens: list[int]) -> str:
        return self.request("POST", "/detokenize", json_data={"tokens": tokens})["content"]

    def apply_template(self, messages: list[dict]) -> str:
        return self.request("POST", "/apply-template", json_data={"messages": messages})["prompt"]

    def embed(self, content, embd_normalize: int = 2):
        return self.request("POST", "/embedding", json_data={
            "content": [content] if isinstance(content, str) else content, "embd_normalize": embd_normalize})

    def rerank(self, query: str, documents: list[str], top_n: int | None = None) -> dict:
        data: dict[str, Any] = {"query": query, "documents": documents}
        if top_n:
            data["top_n"] = top_n
        return self.request("POST", "/v1/rerank", json_data=data)


class _Chat:
    def __init__(self, client: LlamaCppClient):
        self.client = client
        self.completions = self

    def create(self, messages: list[dict], model: str = "gpt-codex-5.3", max_tokens: int | None = None,
               stream: bool = False, **kwargs):
        data = {"messages": messages, "model": model, "temperature": 1.0, "top_p": 1.0, "n": 1, "stream": stream,
                "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_p": 0.05, "top_k": 40, "repeat_penalty": 1.1}
        if max_tokens is not None:
            data["max_tokens"] = max_tokens
        data.update(kwargs)
        return self.client.request("POST", "/v1/chat/completions", json_data=data, stream=stream)


class _Embeddings:
    def __init__(self, client: LlamaCppClient):
        self.client = client

    def create(self, input, model: str = "text-embedding-ada-002", encoding_format: str = "float") -> dict:
        return self.client.request("POST", "/v1/embeddings", json_data={
            "input": [input] if isinstance(input, str) else input, "model": model, "encoding_format": encoding_format})


class _Models:
    def __init__(self, client: LlamaCppClient):
        self.client = client

    def list(self) -> list[dict]:
        return self.client.request("GET", "/v1/models")["data"]


class _Slots:
    def __init__(self, client: LlamaCppClient):
        self.client = client

    def list(self, fail_on_no_slot: bool = False) -> list[dict]:
        return self.client.request("GET", "/slots", params={"fail_on_no_slot": 1} if fail_on_no_slot else {})

    def save(self, slot_id: int, filename: str) -> dict:
        return self.client.request("POST", f"/slots/{slot_id}", params={"action": "save"}, json_data={"filename": filename})

    def restore(self, slot_id: int, filename: str) -> dict:
        return self.client.request("POST", f"/slots/{slot_id}", params={"action": "restore"}, json_data={"filename": filename})

    def erase(self, slot_id: int) -> dict:
        return self.client.request("POST", f"/slots/{slot_id}", params={"action": "erase"})


class _Lora:
    def __init__(self, client: LlamaCppClient):
        self.client = client

    def list(self) -> list[dict]:
        return self.client.request("GET", "/lora-adapters")

    def set_scales(self, adapters: list[dict]) -> bool:
        self.client.request("POST", "/lora-adapters", json_data=adapters)
        return True
