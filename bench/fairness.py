#!/usr/bin/env python3
"""Measures the fair queue: a polite student (one request at a time) beside a flooding script (N requests in
flight at all times), through the gateway, in front of a model server with few slots and a fixed service time
(`gseai-stub --slots S --service-ms T`, like a GPU server that runs S requests at once).

Three runs in one go, each on a fresh gateway:

* alone: the polite student by themselves;
* fifo:  with the flood, the gateway's queue first come, first served (`--queue-discipline fifo`);
* fair:  with the flood, the fair queue (the default).

For each: the polite student's time to first token (the first event of a streamed chat completion; the queue's
`: queued` comments are not tokens), p50 and p95, and the model server's throughput (answers completed per
second while the flood ran). Targets: with the fair queue, the polite p95 is at most its value alone plus one
service time divided by the slots; the throughput is within 5 % of FIFO's (the slots stay full).

Standard library only. Everything listens on 127.0.0.1, every wait has a time limit, every process started here
is stopped at the end. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODEL = "stub/echo-text"
START_TIMEOUT = 30


def start(command: list[str], pattern: str, log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, re.Match]:
    """Starts a process and waits for a line of its standard output that matches `pattern`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GSEAI_")}
    environment.update(env or {})
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log, "wb"), stdin=subprocess.DEVNULL, text=True,
                               env=environment)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := re.search(pattern, line):
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, match
    process.kill()
    sys.exit(f"{command[0]} did not start; see {log}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def stream_once(port: int, key: str, text: str, timeout: float = 120) -> float:
    """One streamed chat completion; the seconds until its first event (comments skipped), after reading it all."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": text}]})
    started = time.monotonic()
    connection.request("POST", "/v1/chat/completions", body=body,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    first = None
    while line := response.readline():
        if first is None and line.startswith(b"data:"):
            first = time.monotonic() - started
    connection.close()
    if first is None:
        raise RuntimeError("the stream had no event")
    return first


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p * len(ordered) + 0.5)) - 1))
    return ordered[index]


def run(args, gseai: Path, stub_port: int, discipline: str | None, folder: Path) -> dict:
    """One gateway, the polite student's requests (and the flood's, unless `discipline` is None)."""
    database = folder / f"{discipline or 'alone'}.sqlite"
    gateway, match = start(
        [str(gseai), "serve", "--upstream-url", f"http://127.0.0.1:{stub_port}", "--upstream-kind", "openai",
         "--upstream-slots", str(args.slots), "--queue-discipline", discipline or "fair", "--database", str(database),
         "--port", "0", "--env-file", "none"],
        r"listening on http://127\.0\.0\.1:(\d+)", folder / f"gateway-{discipline or 'alone'}.log",
        env={"GSEAI_API_TOKEN": "stub-token"})
    port = int(match.group(1))
    try:
        keys = {}
        for name in ("polite", "flood"):
            admin = [str(gseai), "user", "add", name, "--role", "student", "--database", str(database), "--env-file", "none"]
            subprocess.run(admin, check=True, capture_output=True, timeout=60)
            key = subprocess.run([str(gseai), "key", "create", name, "--database", str(database), "--env-file", "none"],
                                 check=True, capture_output=True, text=True, timeout=60).stdout.strip()
            keys[name] = key
        stop_flood = threading.Event()
        completed = []
        lock = threading.Lock()

        def flood_worker(index: int) -> None:
            while not stop_flood.is_set():
                try:
                    stream_once(port, keys["flood"], f"flood {index}")
                    with lock:
                        completed.append(time.monotonic())
                except Exception:
                    time.sleep(0.05)

        workers = []
        if discipline is not None:
            workers = [threading.Thread(target=flood_worker, args=(i,), daemon=True) for i in range(args.flood)]
            for worker in workers:
                worker.start()
            time.sleep(args.service_ms / 1000 * 2)  # the flood fills the line first
        began = time.monotonic()
        first_tokens = [stream_once(port, keys["polite"], f"polite {i}") for i in range(args.requests)]
        ended = time.monotonic()
        stop_flood.set()
        with lock:
            done = [t for t in completed if began <= t <= ended]
        throughput = (len(done) + args.requests) / (ended - began) if discipline is not None else None
        return {"p50": statistics.median(first_tokens), "p95": percentile(first_tokens, 0.95), "throughput": throughput}
    finally:
        stop(gateway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gseai", required=True, type=Path)
    parser.add_argument("--stub", required=True, type=Path)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--service-ms", type=int, default=500)
    parser.add_argument("--flood", type=int, default=32, help="requests the flooding script keeps in flight")
    parser.add_argument("--requests", type=int, default=20, help="the polite student's requests, one after another")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gseai-fairness-") as scratch:
        folder = Path(scratch)
        stub, match = start([str(args.stub), "--port", "0", "--slots", str(args.slots), "--service-ms", str(args.service_ms)],
                            r"listening on http://127\.0\.0\.1:(\d+)", folder / "stub.log")
        try:
            stub_port = int(match.group(1))
            results = {mode: run(args, args.gseai, stub_port, discipline, folder)
                       for mode, discipline in (("alone", None), ("fifo", "fifo"), ("fair", "fair"))}
        finally:
            stop(stub)

    service = args.service_ms / 1000
    print(f"\nmodel server: {args.slots} slots, {args.service_ms} ms per answer; flood: {args.flood} in flight; "
          f"polite: {args.requests} requests one after another\n")
    print(f"| run | polite first token p50 | p95 | answers/s |")
    print(f"| --- | --- | --- | --- |")
    for mode, result in results.items():
        throughput = "–" if result["throughput"] is None else f"{result['throughput']:.2f}"
        print(f"| {mode} | {result['p50'] * 1000:.0f} ms | {result['p95'] * 1000:.0f} ms | {throughput} |")
    bound = results["alone"]["p95"] + service / args.slots
    fair_ok = results["fair"]["p95"] <= bound
    ratio = results["fair"]["throughput"] / results["fifo"]["throughput"]
    print(f"\nfair p95 {results['fair']['p95'] * 1000:.0f} ms <= alone p95 + service/slots {bound * 1000:.0f} ms: "
          f"{'PASS' if fair_ok else 'MISS'}")
    print(f"fair throughput / fifo throughput {ratio:.3f} >= 0.95: {'PASS' if ratio >= 0.95 else 'MISS'}")


if __name__ == "__main__":
    main()
