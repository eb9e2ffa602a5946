#!/usr/bin/env python3
"""Many long streams through one gateway (`bench/run --streams N`).

An upstream written here (asyncio) answers every `POST /v1/chat/completions` with an OpenAI stream that sends
one piece per second for `--seconds` seconds, then the final piece with its usage and `data: [DONE]`. N
clients (asyncio, one connection each) start their streams through `gseai serve` (students' keys, and a pool of upstreams on that one server, with slots and shares above
N so that the relay, not the fair queue, is measured),
spread over `--ramp` seconds, and read every piece. Printed: streams complete and lost (a stream is lost when
it ends early, fails, or misses a piece), the gateway's resident memory when idle and at the peak, the memory
per open stream, and the gateway's CPU time per relayed piece.

Each stream holds two sockets in the gateway (the caller's and the upstream's): with 20,000 open files per
process, about 9,900 streams fit. Everything listens on 127.0.0.1 and stops by itself.
Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

MODEL = bench.MODEL


def piece(index: int) -> bytes:
    event = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
             "choices": [{"index": 0, "delta": {"content": f"piece {index} "}, "finish_reason": None}]}
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def final(pieces: int) -> bytes:
    event = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": pieces, "total_tokens": 5 + pieces}}
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\ndata: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    return lines[0], headers


async def upstream(port_ready: asyncio.Future, seconds: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line, headers = await read_head(reader)
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                if request_line.startswith("GET /v1/models"):
                    body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                for index in range(seconds):
                    writer.write(chunk(piece(index)))
                    await writer.drain()
                    await asyncio.sleep(1)
                writer.write(chunk(final(seconds)) + b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=16384)
    port_ready.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


class Tally:
    def __init__(self) -> None:
        self.complete = 0
        self.lost = 0
        self.pieces = 0
        self.open = 0
        self.peak_open = 0
        self.reasons: dict[str, int] = {}

    def lose(self, reason: str) -> None:
        self.lost += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


async def one_stream(port: int, auth: str, seconds: int, tally: Tally) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "stream"}], "stream": True}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n"
               f"Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(request)
        await writer.drain()
        status_line, headers = await asyncio.wait_for(read_head(reader), timeout=seconds + 60)
        if " 200 " not in status_line + " ":
            tally.lose(f"status {status_line[9:12]}")
            return
        tally.open += 1
        tally.peak_open = max(tally.peak_open, tally.open)
        received = bytearray()
        events = 0
        done = False
        while not done:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=30)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            received += data[:-2]
            while (end := received.find(b"\n\n")) >= 0:
                event = bytes(received[:end])
                del received[:end + 2]
                if event.startswith(b"data: [DONE]"):
                    done = True
                elif event.startswith(b"data: "):
                    events += 1
        tally.open -= 1
        tally.pieces += events
        # Every piece, the final one with the usage, and [DONE].
        if done and events == seconds + 1:
            tally.complete += 1
        else:
            tally.lose(f"ended after {events} of {seconds + 1} pieces")
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as error:
        tally.lose(type(error).__name__)
    finally:
        if writer is not None:
            writer.close()


async def clients(port: int, auths: list[str], streams: int, seconds: int, ramp: float, tally: Tally) -> None:
    tasks = []
    started = time.monotonic()
    for index in range(streams):
        delay = started + ramp * index / max(1, streams) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one_stream(port, auths[index % len(auths)], seconds, tally)))
    await asyncio.gather(*tasks)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gseai", required=True, help="the gseai binary (a release build)")
    parser.add_argument("--streams", type=int, default=9000, help="concurrent streams (9000)")
    parser.add_argument("--seconds", type=int, default=30, help="pieces per stream, one a second (30)")
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which the streams start (10)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--engine", choices=["nio", "async-http-client"],
                        help="the gateway's upstream client (gseai.upstream.engine; by default nio for http://)")
    options = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if options.streams + 100 > hard:
        sys.exit(f"streams: {options.streams} streams need more than the {hard} open files a process may have here")

    def body(folder: Path, processes: bench.Processes) -> None:
        # The upstream in a process of its own: its event loop must not share a core's time with the clients'.
        upstream_process = processes.start([sys.executable, __file__, "--serve-upstream", str(options.seconds)], folder / "upstream.log",
                                           stdout=subprocess.PIPE)
        run(options, folder, processes, int(upstream_process.stdout.readline().decode().strip()))

    bench.in_temporary_folder("gseai-streams-", options.keep, body)


def run(options, folder: Path, processes: bench.Processes, upstream_port: int) -> None:
    database = folder / "gateway.sqlite"
    # A model server runs at most 1,024 answers at once and a student holds at most 1,024 slots (the
    # configuration's limits): the streams go to a pool of upstreams on the one server here, from several
    # students, each far below those limits, so that the relay, not the fair queue, is measured.
    upstreams = [f"u{index}" for index in range(-(-options.streams // 1000))]
    students = [f"streamer{index}" for index in range(-(-options.streams // 1000))]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GSEAI_")}
    environment.update({"GSEAI_POOL": ",".join(upstreams), "GSEAI_QUEUE_CONCURRENCY_PER_USER": "1024",
                        "GSEAI_QUEUE_MAX_WAITING": str(options.streams + 100),
                        "GSEAI_QUEUE_MAX_WAITING_PER_USER": str(options.streams + 100)})
    if options.engine:
        environment["GSEAI_UPSTREAM_ENGINE"] = options.engine
    for name in upstreams:
        prefix = f"GSEAI_UPSTREAM_{name.upper()}_"
        environment.update({prefix + "URL": f"http://127.0.0.1:{upstream_port}", prefix + "KIND": "openai",
                            prefix + "SLOTS": "1000", prefix + "TOKEN": bench.TOKEN})
    def start_gateway(run: int) -> tuple[subprocess.Popen, int, float, Path]:
        log = folder / f"gateway{run}.log"
        launched = time.monotonic()
        gateway = processes.start(
            [options.gseai, "serve", "--database", str(database), "--host", "127.0.0.1", "--port", "0", "--env-file", "none",
             "--log-level", "warning"],
            log, stdout=subprocess.PIPE, env=environment, cwd=folder)
        port = int(bench.read_lines_until(gateway, r"gseai gateway listening on http://127\.0\.0\.1:(\d+)", 60, "gseai serve", log).group(1))
        # From the start of the process to its first line saying it listens.
        return gateway, port, time.monotonic() - launched, log

    # The first start makes the database (migrations, the first administrator: a bcrypt hash); the second is a
    # restart, as every start after the first.
    first, _, first_start, _ = start_gateway(1)
    first.terminate()
    first.wait(timeout=30)
    gateway, port, cold_start, log = start_gateway(2)

    def cli(*args: str) -> str:
        result = subprocess.run([options.gseai, *args, "--database", str(database), "--env-file", "none"], capture_output=True,
                                text=True, env=environment, timeout=120, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            sys.exit(f"streams: gseai {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    keys = []
    for student in students:
        cli("user", "add", student, "--role", "student")
        keys.append(cli("key", "create", student, "--name", "streams"))
    time.sleep(1)
    idle_rss = rss_kib(gateway.pid)
    peak = {"rss": idle_rss}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            try:
                peak["rss"] = max(peak["rss"], rss_kib(gateway.pid))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = bench.process_cpu_seconds(gateway.pid)
    tally = Tally()
    started = time.monotonic()
    asyncio.run(clients(port, [f"Bearer {key}" for key in keys], options.streams, options.seconds, options.ramp, tally))
    elapsed = time.monotonic() - started
    cpu = bench.process_cpu_seconds(gateway.pid) - cpu_before
    stop.set()
    sampler.join()
    if gateway.poll() is not None:
        sys.exit(f"streams: the gateway exited with {gateway.returncode}: {bench.tail(log)}")

    print(f"{options.streams} streams of {options.seconds} pieces (one a second), started over {options.ramp:g} s, "
          f"through one gateway; {elapsed:.1f} s in all")
    print(f"  gateway start to listening: {cold_start:.2f} s (first start, new database: {first_start:.2f} s), {len(upstreams)} upstreams; "
          f"resident memory when idle after it: {idle_rss / 1024:.1f} MiB")
    print(f"  complete {tally.complete}, lost {tally.lost}" + (f" ({tally.reasons})" if tally.reasons else ""))
    print(f"  open at once (peak, as the clients saw it): {tally.peak_open}")
    print(f"  gateway resident memory: idle {idle_rss / 1024:.1f} MiB, peak {peak['rss'] / 1024:.1f} MiB; "
          f"{(peak['rss'] - idle_rss) / max(1, tally.peak_open):.1f} KiB per open stream")
    print(f"  gateway CPU: {cpu:.1f} s for {tally.pieces} pieces relayed: {cpu / max(1, tally.pieces) * 1e6:.1f} µs per piece "
          f"(stream set-up included)")
    verdict = "PASS" if tally.lost == 0 and peak["rss"] * 1024 <= 300 * 10**6 else "MISS"
    print(f"  target: none lost and at most 300 MB at the peak: {verdict}")
    print(f"  target: a start within 0.3 s: {'PASS' if cold_start <= 0.3 else 'MISS'}; "
          f"at most 40 MB resident when idle: {'PASS' if idle_rss * 1024 <= 40 * 10**6 else 'MISS'}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-upstream":
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)

        async def serve_main() -> None:
            future = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(upstream(future, int(sys.argv[2])))
            print(await future, flush=True)
            await task

        asyncio.run(serve_main())
    else:
        main()
