#!/usr/bin/env python3
"""Measures what the gateway costs: one run, three targets, the same load, ratios at the end.

    upstream <- (a) directly
    upstream <- (b) gseai serve  (release build)
    upstream <- (c) nginx        (reverse proxy, proxy_buffering off, keepalive to the upstream)

For each mode (`POST /v1/chat/completions` with stream false, then stream true) and each target:

* load: `wrk` for a fixed time (default 10 s, 2 threads, 32 connections) after a short warm-up:
  requests/s and latency p50/p99 under load;
* probe: one keep-alive connection sending requests back to back (default 3 s): p50/p99 of the time to the
  first body byte and to the end of the answer without queueing, which is what "added latency" means.

Then the ratios: gateway/nginx throughput (target >= 0.5), the gateway's CPU per request against nginx's
(target <= 3 x) and the p50 latency the gateway adds over the direct path (target <= 0.3 ms; issue 15's
targets, which replaced the gateway issue's 0.5 ms), each marked PASS or MISS.

With `--floor PATH` (the bench/floor binary, built by `bench/run --floor`), the same run also measures the
floor of the gateway's stack: Hummingbird alone answering the fixed bytes (`hb-hello`), and Hummingbird with
one AsyncHTTPClient forwarding to the same upstream without any of the gateway's work (`hb-proxy`), each
with handlers on Swift's global pool and on the connection's NIO event loop (`-el`), plus `hb-proxy-nio`
with NIO's event loops as Swift's global executor; `hb-nio-proxy` is Hummingbird with a lean purpose-built
SwiftNIO client instead of AsyncHTTPClient, `nio-proxy` the same forwarding in pure SwiftNIO. Their
throughput is printed as a ratio to nginx's.

Standard library only; needs `wrk` and `nginx` on PATH (bench/run installs them). Everything listens on
127.0.0.1, every wait has a time limit, every process started here is stopped at the end.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

TOKEN = "stub-token"
MODEL = "stub/echo-text"
PATH = "/v1/chat/completions"
# Issue 15's bound on the p50 latency the gateway adds (a whole plain answer; a stream's first byte).
ADDED_P50_TARGET_MS = 0.3
PROMPT = "Say something short for the benchmark please"
START_TIMEOUT = 30

# What the fixed upstream answers: the stub's own answers to PROMPT, byte for byte in shape.
FIXED_REPLY = "Echo: " + PROMPT
FIXED_JSON = json.dumps({
    "id": "chatcmpl-fixed", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": FIXED_REPLY}}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15},
}, separators=(",", ":"))


def _fixed_sse() -> str:
    def chunk(delta: dict, finish=None) -> str:
        value = {"id": "chatcmpl-fixed", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return "data: " + json.dumps(value, separators=(",", ":")) + "\n\n"

    words = FIXED_REPLY.split(" ")
    pieces = [word + " " for word in words[:-1]] + [words[-1]]
    return (chunk({"role": "assistant", "content": ""}) + "".join(chunk({"content": p}) for p in pieces)
            + chunk({}, "stop") + "data: [DONE]\n\n")


FIXED_SSE = _fixed_sse()


def body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32,
                       "stream": stream}, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------
# Processes


@dataclass
class Processes:
    """Every process started here, stopped in reverse order by `stop_all`."""

    started: list[subprocess.Popen] = field(default_factory=list)
    # Run after the processes stop (a database server to stop, say).
    cleanups: list = field(default_factory=list)

    def start(self, command: list[str], log: Path, **options) -> subprocess.Popen:
        handle = open(log, "wb")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=handle,
                                   stdout=options.pop("stdout", handle), **options)
        handle.close()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.started):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for cleanup in self.cleanups:
            cleanup()


def in_temporary_folder(prefix: str, keep: bool, body) -> None:
    """Runs `body(folder, processes)` in a new temporary folder; then stops every process it started and removes
    the folder (unless `keep`)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    processes = Processes()
    try:
        body(folder, processes)
    finally:
        processes.stop_all()
        if keep:
            print(f"\nlogs and configurations kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def read_lines_until(process: subprocess.Popen, pattern: str, timeout: float, what: str, log: Path) -> re.Match:
    """Reads the process's stdout (in a thread, kept draining) until a line matches `pattern`."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for raw in iter(process.stdout.readline, b""):
            lines.put(raw.decode(errors="replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            sys.exit(f"bench: {what} did not start within {timeout:.0f} s; output {seen!r}; log {tail(log)}")
        seen.append(line.rstrip())
        if match := re.search(pattern, line):
            return match


def wait_for_port(port: int, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"bench: {what} exited with {process.returncode}: {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s: {tail(log)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def nginx_config(folder: Path, listen: int, server_block: str, workers: str, http_extra: str = "") -> Path:
    """An nginx configuration that keeps everything (pid, logs, temp files) inside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(f"""
daemon off;
master_process on;
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    keepalive_requests 1000000;
{http_extra}
    server {{
        listen 127.0.0.1:{listen};
{server_block}
    }}
}}
""")
    return config


def start_nginx(processes: Processes, folder: Path, server_block: str, workers: str, what: str,
                http_extra: str = "") -> int:
    port = free_port()
    config = nginx_config(folder, port, server_block, workers, http_extra)
    log = folder / "stderr.log"
    process = processes.start(["nginx", "-p", str(folder), "-c", str(config)], log)
    wait_for_port(port, START_TIMEOUT, what, process, log)
    return port


def nginx_string(text: str) -> str:
    """`text` as a single-quoted nginx string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------
# Load (wrk) and probe (one connection)

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT")
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float | None = None  # CPU time of the target's processes per request, when known


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds (user + system) used so far by process `root` and its descendants (Linux /proc), or None."""
    stats = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    if root not in stats:
        return None
    members, grew = {root}, True
    while grew:
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return sum(stats[pid][1] for pid in members) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process that must be running (and its children); exits if it is gone."""
    seconds = tree_cpu_seconds(pid)
    if seconds is None:
        sys.exit(f"bench: process {pid} is gone")
    return seconds


def run_wrk(script: Path, port: int, stream: bool, auth: str, seconds: float, threads: int, connections: int) -> Load:
    environment = dict(os.environ, BENCH_BODY=body(stream).decode(), BENCH_AUTH=auth,
                       BENCH_ACCEPT="text/event-stream" if stream else "application/json")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
               "-s", str(script), f"http://127.0.0.1:{port}{PATH}"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=seconds + 60)
    match = re.search(r"BENCH-RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) "
                      r"status_errors=(\d+) socket_errors=(\d+)", result.stdout)
    if result.returncode != 0 or not match:
        sys.exit(f"bench: wrk failed ({result.returncode}): {result.stdout}\n{result.stderr}")
    requests, duration, p50, p99, status_errors, socket_errors = map(int, match.groups())
    return Load(rps=requests / (duration / 1e6), p50_ms=p50 / 1000, p99_ms=p99 / 1000,
                errors=status_errors + socket_errors, requests=requests)


class Connection:
    """A minimal HTTP/1.1 keep-alive client that notes when the first body byte arrives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.filled_at = 0.0

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("connection closed")
        self.filled_at = time.perf_counter()
        self.buffer += data

    def _take_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def exchange(self, request: bytes) -> tuple[int, float, float, bytes]:
        """Sends one request; returns (status, seconds to the first body byte, seconds to the end, body)."""
        started = time.perf_counter()
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end + 4]
        status = int(head[0].split(" ")[1])
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        if not self.buffer:
            self._fill()
        first = self.filled_at - started
        parts = []
        if "content-length" in headers:
            parts.append(self._take(int(headers["content-length"])))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._take_line().split(b";")[0], 16)
                if size == 0:
                    while self._take_line():
                        pass
                    break
                parts.append(self._take(size))
                self._take(2)
        else:
            raise ValueError(f"cannot frame the answer: {headers}")
        return status, first, time.perf_counter() - started, b"".join(parts)


def request_bytes(port: int, stream: bool, auth: str) -> bytes:
    payload = body(stream)
    head = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
            f"Accept: {'text/event-stream' if stream else 'application/json'}", f"Content-Length: {len(payload)}"]
    if auth:
        head.append(f"Authorization: {auth}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def check_answer(port: int, stream: bool, auth: str, what: str) -> None:
    """One request: the answer must be the echo, complete, before any timing counts."""
    connection = Connection(port)
    try:
        status, _, _, content = connection.exchange(request_bytes(port, stream, auth))
    finally:
        connection.close()
    text = content.decode(errors="replace")
    expected = "[DONE]" if stream else FIXED_REPLY
    if status != 200 or expected not in text or "Echo:" not in text:
        sys.exit(f"bench: {what} answered {status} {text[:300]!r}")


@dataclass
class Probe:
    count: int
    first_p50_ms: float
    first_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float


def gateway_json(port: int, key: str, method: str, path: str, body: bytes, content_type: str) -> dict:
    """One request to the gateway's own API with an API key; exits on anything but success."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"{}")
    except Exception as error:  # noqa: BLE001 (any failure ends the run with its reason)
        sys.exit(f"bench: {method} {path} failed: {error}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_probe(port: int, stream: bool, auth: str, seconds: float) -> Probe:
    request = request_bytes(port, stream, auth)
    connection = Connection(port)
    firsts, totals = [], []
    try:
        for _ in range(50):  # warm-up
            connection.exchange(request)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            status, first, total, _ = connection.exchange(request)
            if status != 200:
                sys.exit(f"bench: probe got HTTP {status}")
            firsts.append(first)
            totals.append(total)
    finally:
        connection.close()
    ms = 1000
    return Probe(len(totals), percentile(firsts, 0.5) * ms, percentile(firsts, 0.99) * ms,
                 percentile(totals, 0.5) * ms, percentile(totals, 0.99) * ms)


# ---------------------------------------------------------------------------
# Main


@dataclass
class Target:
    name: str
    port: int
    auth: str
    pid: int = 0  # the process serving it (with its children), for its CPU time per request


# The floor targets: name -> the bench/floor mode and its options. See bench/floor/Sources/floor/main.swift.
FLOOR_TARGETS = {
    "hb-hello": ["hello", "--executor", "pool"],
    "hb-hello-el": ["hello", "--executor", "eventloop"],
    "hb-proxy": ["proxy", "--executor", "pool"],
    "hb-proxy-el": ["proxy", "--executor", "eventloop"],
    "hb-proxy-nio": ["proxy", "--executor", "takeover"],
    "hb-nio-proxy": ["proxy", "--client", "nio"],
    "nio-proxy": ["nio-proxy"],
}


def names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def start_floor(options, folder: Path, processes: Processes, upstream_port: int) -> list[Target]:
    """Starts one bench/floor process per floor target; returns the targets."""
    (folder / "fixed.json").write_text(FIXED_JSON)
    (folder / "fixed.sse").write_text(FIXED_SSE)
    targets = []
    for name in names(options.floor_targets):
        arguments = FLOOR_TARGETS[name]
        log = folder / f"{name}.log"
        command = [options.floor, *arguments, "--port", "0"]
        if arguments[0] == "hello":
            command += ["--json", str(folder / "fixed.json"), "--sse", str(folder / "fixed.sse")]
        else:
            command += ["--upstream", f"http://127.0.0.1:{upstream_port}", "--token", TOKEN]
        process = processes.start(command, log, stdout=subprocess.PIPE)
        port = int(read_lines_until(process, r"floor listening on http://127\.0\.0\.1:(\d+)", START_TIMEOUT,
                                    name, log).group(1))
        targets.append(Target(name, port, "", process.pid))
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gseai", required=True, help="the gseai binary (a release build)")
    parser.add_argument("--stub", help="the gseai-stub binary (needed for --upstream stub)")
    parser.add_argument("--upstream", choices=["fixed", "stub"], default="fixed",
                        help="fixed: nginx answering fixed bytes (default); stub: gseai-stub")
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per target and mode (10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each measurement (2)")
    parser.add_argument("--probe", type=float, default=3, help="seconds of one-connection probing (3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--modes", default="plain,stream", help="plain,stream (default both)")
    parser.add_argument("--gateway-log-level", default="info", help="gseai serve --log-level (info, as deployed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, configs)")
    parser.add_argument("--engine", choices=["nio", "async-http-client"],
                        help="the gateway's upstream client (gseai.upstream.engine; by default nio for http://)")
    parser.add_argument("--floor", help="the bench/floor binary: also measure the floor targets (off by default)")
    parser.add_argument("--class-target", action="store_true",
                        help="also measure `gateway-class`: the gateway with a student in a class whose policy has a "
                             "daily token budget and a system prompt (the policy path; the budget is never reached)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="postgres: also measure the gateway on a PostgreSQL of its own (scripts/postgres), one "
                             "replica and two behind nginx, for a student in a class with a budget and a rate limit, "
                             "beside the same on SQLite (implies --class-target)")
    parser.add_argument("--floor-targets", default=",".join(FLOOR_TARGETS),
                        help=f"which floor targets, with --floor ({','.join(FLOOR_TARGETS)})")
    options = parser.parse_args()
    if options.database == "postgres":
        options.class_target = True
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not on PATH (bench/run installs it)")
    if options.upstream == "stub" and not options.stub:
        sys.exit("bench: --upstream stub needs --stub PATH")
    options.gseai = str(Path(options.gseai).resolve())
    if options.stub:
        options.stub = str(Path(options.stub).resolve())
    if options.floor:
        options.floor = str(Path(options.floor).resolve())
        unknown = set(names(options.floor_targets)) - set(FLOOR_TARGETS)
        if unknown:
            sys.exit(f"bench: unknown floor targets {sorted(unknown)}; known: {', '.join(FLOOR_TARGETS)}")

    in_temporary_folder("gseai-bench-", options.keep, lambda folder, processes: run(options, folder, processes))


# The class of `gateway-class` (and of the PostgreSQL targets): a budget and a rate limit it never reaches, a
# system prompt that is supplied: every request goes through the class's policy, budget and rate window.
CLASS_POLICY = {"daily_token_budget": 10**12, "requests_per_minute": 10**7, "max_output_tokens": 64,
                "system_prompt": "Be brief."}


def start_postgres_targets(options, folder: Path, processes: Processes, upstream_port: int,
                           environment: dict) -> list[Target]:
    """A PostgreSQL of its own, two gateway replicas on it and nginx in front of both (round robin): the
    targets `pg-class` (one replica) and `pg-2x-nginx` (both through nginx), for a student in a class."""
    root = Path(__file__).resolve().parents[1]
    # The server runs as the `postgres` user when the bench runs as root: it must reach its folder.
    folder.chmod(0o755)
    pg_folder = folder / "postgres"
    pg_folder.mkdir()
    pg_folder.chmod(0o755)
    started = subprocess.run([str(root / "scripts" / "postgres"), "start", str(pg_folder / "pg")], capture_output=True, text=True)
    if started.returncode != 0:
        sys.exit(f"bench: PostgreSQL did not start: {started.stderr}")
    processes.cleanups.append(lambda: subprocess.run([str(root / "scripts" / "postgres"), "stop", str(pg_folder / "pg")],
                                                     capture_output=True))
    url = started.stdout.strip()
    replicas = []
    for index in (1, 2):
        log = folder / f"replica{index}.log"
        replica = processes.start(
            [options.gseai, "serve", "--upstream-url", f"http://127.0.0.1:{upstream_port}", "--upstream-kind", "lmstudio",
             "--database", url, "--host", "127.0.0.1", "--port", "0", "--env-file", "none",
             "--log-level", options.gateway_log_level],
            log, stdout=subprocess.PIPE, env=environment, cwd=folder,
        )
        port = int(read_lines_until(replica, r"gseai gateway listening on http://127\.0\.0\.1:(\d+)", START_TIMEOUT,
                                    f"gseai serve (replica {index})", log).group(1))
        replicas.append((replica, port))

    def cli(*args: str) -> str:
        result = subprocess.run([options.gseai, *args, "--database", url, "--env-file", "none"],
                                capture_output=True, text=True, timeout=120, env=environment, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            sys.exit(f"bench: gseai {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    cli("user", "add", "bench-class", "--role", "student")
    cli("user", "add", "bench-teacher", "--role", "instructor")
    class_key = cli("key", "create", "bench-class", "--name", "bench")
    teacher = cli("key", "create", "bench-teacher", "--name", "bench")
    made = gateway_json(replicas[0][1], teacher, "POST", "/api/classes",
                        json.dumps({"name": "Bench", "policy": CLASS_POLICY}).encode(), "application/json")
    gateway_json(replicas[0][1], teacher, "POST", f"/api/classes/{made['id']}/roster", b"bench-class\n", "text/csv")
    # An existing account is invited; it joins by accepting.
    gateway_json(replicas[0][1], class_key, "POST", f"/api/classes/invitations/{made['id']}/accept", b"{}", "application/json")
    block = """
        location / {
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }"""
    balancer_port = start_nginx(processes, folder / "balancer", block, "auto", "nginx (balancer of the replicas)",
                                http_extra=f"    upstream replicas {{ server 127.0.0.1:{replicas[0][1]}; "
                                           f"server 127.0.0.1:{replicas[1][1]}; keepalive 64; }}")
    return [
        Target("pg-class", replicas[0][1], f"Bearer {class_key}", replicas[0][0].pid),
        Target("pg-2x-nginx", balancer_port, f"Bearer {class_key}", processes.started[-1].pid),
    ]


def run(options, folder: Path, processes: Processes) -> None:
    # The upstream.
    if options.upstream == "stub":
        log = folder / "stub.log"
        process = processes.start([options.stub, "--port", "0", "--token", TOKEN], log, stdout=subprocess.PIPE)
        upstream_port = int(read_lines_until(process, r"listening on http://127\.0\.0\.1:(\d+)", START_TIMEOUT,
                                             "gseai-stub", log).group(1))
        upstream_note = "gseai-stub (release)"
    else:
        block = f"""
        access_log off;
        location = {PATH} {{
            if ($http_accept ~* "event-stream") {{ rewrite ^ /sse last; }}
            default_type application/json;
            return 200 {nginx_string(FIXED_JSON)};
        }}
        location = /sse {{
            internal;
            default_type text/event-stream;
            return 200 {nginx_string(FIXED_SSE)};
        }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{{"object":"list","data":[{{"id":"{MODEL}","object":"model"}}]}}';
        }}"""
        upstream_port = start_nginx(processes, folder / "upstream", block, "1", "the fixed upstream (nginx)")
        process = processes.started[-1]
        upstream_note = "nginx returning fixed bytes (1 worker)"

    # The gateway, with a user key made by the CLI.
    database = folder / "gateway.sqlite"
    log = folder / "gateway.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GSEAI_")}
    environment["GSEAI_API_TOKEN"] = TOKEN
    # The relay is measured, not the fair queue: the fixed upstream has no GPU to share, so its slots and one
    # key's share of them are set far above the load (bench/fairness measures the queue).
    environment["GSEAI_UPSTREAM_SLOTS"] = "1024"
    environment["GSEAI_QUEUE_CONCURRENCY_PER_USER"] = "1024"
    if options.engine:
        environment["GSEAI_UPSTREAM_ENGINE"] = options.engine
    gateway = processes.start(
        [options.gseai, "serve", "--upstream-url", f"http://127.0.0.1:{upstream_port}", "--upstream-kind", "lmstudio",
         "--database", str(database), "--host", "127.0.0.1", "--port", "0", "--env-file", "none",
         "--log-level", options.gateway_log_level],
        log, stdout=subprocess.PIPE, env=environment, cwd=folder,
    )
    gateway_port = int(read_lines_until(gateway, r"gseai gateway listening on http://127\.0\.0\.1:(\d+)", START_TIMEOUT,
                                        "gseai serve", log).group(1))
    def cli(*args: str) -> str:
        result = subprocess.run([options.gseai, *args, "--database", str(database), "--env-file", "none"],
                                capture_output=True, text=True, timeout=120, env=environment, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            sys.exit(f"bench: gseai {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    cli("user", "add", "bench", "--role", "student")
    key = cli("key", "create", "bench", "--name", "bench")
    class_key = None
    if options.class_target:
        # A second student, in an instructor's class with a budget it will not reach and a system prompt that
        # is supplied: each request then goes through the class policy (class, budget, rewrite).
        cli("user", "add", "bench-class", "--role", "student")
        cli("user", "add", "bench-teacher", "--role", "instructor")
        class_key = cli("key", "create", "bench-class", "--name", "bench")
        teacher = cli("key", "create", "bench-teacher", "--name", "bench")
        made = gateway_json(gateway_port, teacher, "POST", "/api/classes", json.dumps(
            {"name": "Bench", "policy": CLASS_POLICY}).encode(),
            "application/json")
        gateway_json(gateway_port, teacher, "POST", f"/api/classes/{made['id']}/roster", b"bench-class\n", "text/csv")
        # An existing account is invited; it joins by accepting.
        gateway_json(gateway_port, class_key, "POST", f"/api/classes/invitations/{made['id']}/accept", b"{}", "application/json")

    # nginx as the reverse proxy.
    block = f"""
        location / {{
            proxy_pass http://llm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {TOKEN}";
            proxy_buffering off;
        }}"""
    proxy_port = start_nginx(processes, folder / "proxy", block, "auto", "nginx (reverse proxy)",
                             http_extra=f"    upstream llm {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}")
    proxy_pid = processes.started[-1].pid

    targets = [
        Target("direct", upstream_port, f"Bearer {TOKEN}", process.pid),
        Target("nginx", proxy_port, "", proxy_pid),
        Target("gateway", gateway_port, f"Bearer {key}", gateway.pid),
    ]
    if class_key:
        targets.append(Target("gateway-class", gateway_port, f"Bearer {class_key}", gateway.pid))
    if options.floor:
        targets += start_floor(options, folder, processes, upstream_port)
    if options.database == "postgres":
        targets += start_postgres_targets(options, folder, processes, upstream_port, environment)
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT)
    modes = [m.strip() for m in options.modes.split(",") if m.strip()]

    print(f"upstream: {upstream_note}; load: wrk -t{options.threads} -c{options.connections} "
          f"{options.duration:g} s per target and mode (after {options.warmup:g} s warm-up); "
          f"probe: 1 connection, {options.probe:g} s; {os.cpu_count()} CPUs shared by everything")
    results: dict[tuple[str, str], tuple[Load, Probe]] = {}
    for mode in modes:
        stream = mode == "stream"
        for target in targets:
            check_answer(target.port, stream, target.auth, f"{target.name} ({mode})")
            run_wrk(script, target.port, stream, target.auth, options.warmup, options.threads, options.connections)
            cpu_before = tree_cpu_seconds(target.pid)
            load = run_wrk(script, target.port, stream, target.auth, options.duration, options.threads,
                           options.connections)
            cpu_after = tree_cpu_seconds(target.pid)
            if cpu_before is not None and cpu_after is not None and load.requests:
                load.cpu_us = (cpu_after - cpu_before) / load.requests * 1e6
            probe = run_probe(target.port, stream, target.auth, options.probe)
            results[(mode, target.name)] = (load, probe)
            print(f"  measured {mode:6} {target.name:12} {load.rps:9.0f} req/s", flush=True)
        if gateway.poll() is not None:
            sys.exit(f"bench: the gateway exited with {gateway.returncode}: {tail(log)}")

    report(modes, targets, results)


def report(modes: list[str], targets: list[Target], results) -> None:
    print()
    print(f"{'mode':7} {'target':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'err':>5} {'cpu us/req':>10} | "
          f"{'1-conn first p50':>16} {'p99':>7} {'total p50':>10} {'p99':>7}")
    for mode in modes:
        for target in targets:
            load, probe = results[(mode, target.name)]
            cpu = f"{load.cpu_us:10.1f}" if load.cpu_us is not None else f"{'-':>10}"
            print(f"{mode:7} {target.name:12} {load.rps:9.0f} {load.p50_ms:8.2f} {load.p99_ms:8.2f} {load.errors:5d} {cpu} | "
                  f"{probe.first_p50_ms:16.3f} {probe.first_p99_ms:7.3f} {probe.total_p50_ms:10.3f} {probe.total_p99_ms:7.3f}")
    print()
    print("ratios (targets: gateway/nginx throughput >= 0.5; CPU per request <= 3 x nginx's; "
          f"p50 added by the gateway over direct <= {ADDED_P50_TARGET_MS} ms)")
    verdicts = []
    for mode in modes:
        direct_load, direct_probe = results[(mode, "direct")]
        nginx_load, nginx_probe = results[(mode, "nginx")]
        gateway_load, gateway_probe = results[(mode, "gateway")]
        ratio = gateway_load.rps / nginx_load.rps if nginx_load.rps else 0.0
        verdicts.append(ratio >= 0.5)
        print(f"  {mode:6} throughput gateway/nginx  {ratio:6.2f}   "
              f"({gateway_load.rps:.0f} / {nginx_load.rps:.0f} req/s; nginx/direct {nginx_load.rps / direct_load.rps:.2f})"
              f"   {'PASS' if ratio >= 0.5 else 'MISS'}")
        if gateway_load.cpu_us is not None and nginx_load.cpu_us:
            cpu_ratio = gateway_load.cpu_us / nginx_load.cpu_us
            verdicts.append(cpu_ratio <= 3)
            print(f"  {mode:6} CPU per request gateway/nginx {cpu_ratio:6.2f}   ({gateway_load.cpu_us:.1f} / {nginx_load.cpu_us:.1f} µs)"
                  f"   {'PASS' if cpu_ratio <= 3 else 'MISS'}")
        measure = "first byte" if mode == "stream" else "answer"
        added = (gateway_probe.first_p50_ms if mode == "stream" else gateway_probe.total_p50_ms) - (
            direct_probe.first_p50_ms if mode == "stream" else direct_probe.total_p50_ms)
        added_nginx = (nginx_probe.first_p50_ms if mode == "stream" else nginx_probe.total_p50_ms) - (
            direct_probe.first_p50_ms if mode == "stream" else direct_probe.total_p50_ms)
        verdicts.append(added <= ADDED_P50_TARGET_MS)
        print(f"  {mode:6} p50 added to the {measure:10} {added:6.3f} ms (nginx adds {added_nginx:.3f} ms)"
              f"   {'PASS' if added <= ADDED_P50_TARGET_MS else 'MISS'}")
        if mode == "stream":
            total_added = gateway_probe.total_p50_ms - direct_probe.total_p50_ms
            print(f"  {mode:6} p50 added to the whole stream {total_added:6.3f} ms (information)")
        loaded_added = gateway_load.p50_ms - direct_load.p50_ms
        print(f"  {mode:6} p50 under load, gateway - direct {loaded_added:6.2f} ms (information: includes queueing)")
        if any(target.name == "gateway-class" for target in targets):
            class_load = results[(mode, "gateway-class")][0]
            print(f"  {mode:6} throughput gateway-class/nginx {class_load.rps / nginx_load.rps:6.2f}   "
                  f"(a student in a class with a budget; gateway-class/gateway "
                  f"{class_load.rps / gateway_load.rps if gateway_load.rps else 0:.2f}) (information)")
        if any(target.name == "pg-class" for target in targets):
            sqlite_load, sqlite_probe = results[(mode, "gateway-class")]
            for name in ("pg-class", "pg-2x-nginx"):
                pg_load, pg_probe = results[(mode, name)]
                ratio_pg = pg_load.rps / sqlite_load.rps if sqlite_load.rps else 0.0
                added_pg = (pg_probe.first_p50_ms if mode == "stream" else pg_probe.total_p50_ms) - (
                    direct_probe.first_p50_ms if mode == "stream" else direct_probe.total_p50_ms)
                verdicts.extend([ratio_pg >= 0.7, added_pg <= 1.0])
                print(f"  {mode:6} {name} / gateway-class (SQLite) throughput {ratio_pg:6.2f}   "
                      f"({pg_load.rps:.0f} / {sqlite_load.rps:.0f} req/s)   {'PASS' if ratio_pg >= 0.7 else 'MISS'} (target >= 0.7)")
                print(f"  {mode:6} {name} p50 added to the {measure:10} {added_pg:6.3f} ms   "
                      f"{'PASS' if added_pg <= 1.0 else 'MISS'} (target <= 1 ms)")
        floors = [target.name for target in targets if target.name in FLOOR_TARGETS]
        if floors:
            print(f"  {mode:6} the floor, throughput / nginx (information):  gateway {ratio:.2f}  "
                  + "  ".join(f"{name} {results[(mode, name)][0].rps / nginx_load.rps:.2f}" for name in floors))
            proxies = [name for name in floors if "proxy" in name]
            if proxies:
                print(f"  {mode:6} gateway / proxy floor (information):  "
                      + "  ".join(f"gateway/{name} {gateway_load.rps / results[(mode, name)][0].rps:.2f}"
                                  for name in proxies))
    print()
    print("overall:", "PASS" if all(verdicts) else "MISS")


if __name__ == "__main__":
    main()
