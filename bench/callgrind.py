#!/usr/bin/env python3
"""The gateway's own work per request, in instructions: `valgrind --tool=callgrind` counts them, whatever else
the machine is doing, so two builds compare to the instruction (bench/README.md, "Instructions per request").

The gateway (bench/profile: `gseai serve` from a synchronous main, see its Package.swift) runs under callgrind
with instrumentation off; the fixed-bytes upstream of bench.py answers (nginx, not measured). For each
scenario, after a warm-up, the counters are zeroed, N requests are sent one after the other on one keep-alive
connection, and the counts are dumped. Each dump is read with `callgrind_annotate` and the instructions per
request are printed in all and by who runs them: each function's own instructions (not those of what it
calls) go to its library, the gateway's own functions to the part their type belongs to.

Then the same binary runs without valgrind and its CPU time per request over one connection is read from
/proc, which gives the time one instruction of this program takes on this machine (including the kernel's
share of each request, so an upper bound): the parts are also printed in µs.

Standard library only; needs valgrind (callgrind_control, callgrind_annotate), nginx and swift demangle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared helpers: processes, nginx, the fixed upstream, the HTTP probe)

# Who does the work: every function's own instructions (exclusive: not those of what it calls) go to its
# module, and the gateway's own functions to the part their type belongs to. A Swift function's module is in
# its mangled name (`$s12GSEAIGateway…`); the runtime's and C library's functions are told by their library.
GATEWAY_PARTS = [
    ("authentication (key cache, identity)", r"Authentication|Credential|ExpiringCache|AccountService|Secrets|CachedAccount"),
    ("class policy (class, limits, rewrite)", r"Polic|CachedClass|Limiter|BudgetLedger|RateWindow|BudgetReservation"),
    ("fair queue and upstream choice", r"FairScheduler|UpstreamPool|Admission|Upstream$"),
    ("usage accounting", r"Usage|ResponseObserver"),
    ("request log", r"RequestLog|GatewayLogHandler|Milliseconds"),
    ("metrics", r"Metrics"),
    ("relay (forwarding, stream relay)", r"Proxy|StreamRelay|Relay|ResponseBody"),
]
# The parts whose sum issue 15's item 3 bounds (15 µs), with the libraries' groups that are theirs: the relay,
# the fair queue and the rest are not among them.
ITEM_3_PARTS = {"authentication (key cache, identity)", "class policy (class, limits, rewrite)", "usage accounting",
                "request log", "metrics", "request log (swift-log)", "metrics (swift-metrics, swift-prometheus)"}
MODULE_GROUPS = [
    ("request log (swift-log)", r"^Logging$"),
    ("metrics (swift-metrics, swift-prometheus)", r"^(Prometheus|CoreMetrics|Metrics)$"),
    ("JSON and events (GSEAIFormats)", r"^GSEAIFormats$"),
    ("client core (GSEAI)", r"^GSEAI$"),
    ("HTTP server (Hummingbird)", r"^(Hummingbird\w*|HTTPTypes|NIOHTTPTypes\w*)$"),
    ("upstream client (AsyncHTTPClient)", r"^AsyncHTTPClient$"),
    ("SwiftNIO", r"^_?NIO\w*$"),
]


def module_of(name: str, library: str) -> str:
    """The Swift module of a mangled name, or a library's group for the rest."""
    if name.startswith("$ss") or name.startswith("$sS"):
        return "Swift standard library"
    if m := re.match(r"\$s(\d+)", name):
        length = int(m.group(1))
        return name[m.end():m.end() + length]
    if "libswift_Concurrency" in library:
        return "Swift concurrency runtime"
    if "libswiftCore" in library:
        return "Swift runtime (retain/release, metadata, exclusivity)"
    if "libc.so" in library or "ld-linux" in library or "libpthread" in library:
        return "C library (malloc, memcpy, locks)"
    if library.endswith("gseai-profile"):
        return "C code in the binary (llhttp, SQLite, atomics)"
    return library.rsplit("/", 1)[-1] or "other"


def gateway_type(name: str) -> str:
    """The first type a GSEAIGateway symbol names."""
    m = re.match(r"\$s12GSEAIGateway(\d+)", name)
    if not m:
        return ""
    return name[m.end():m.end() + int(m.group(1))]


def annotate(path: Path) -> tuple[int, list[tuple[int, str, str]]]:
    """The dump's total instructions and every function's own (exclusive) count, with its library."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)], capture_output=True, text=True, check=True).stdout
    total = 0
    rows: list[tuple[int, str, str]] = []
    for line in out.splitlines():
        if m := re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+PROGRAM TOTALS", line):
            total = int(m.group(1).replace(",", ""))
        elif m := re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*?:(.+?) \[(.*)\]$", line):
            rows.append((int(m.group(1).replace(",", "")), m.group(2).strip(), m.group(3)))
    return total, rows


def groups(rows: list[tuple[int, str, str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Instructions per group of modules, and per part of the gateway's own code."""
    by_group: dict[str, int] = {}
    by_part: dict[str, int] = {}
    for count, name, library in rows:
        module = module_of(name, library)
        if module == "GSEAIGateway":
            kind = gateway_type(name)
            part = next((part for part, pattern in GATEWAY_PARTS if re.search(pattern, kind)), "other gateway code")
            by_part[part] = by_part.get(part, 0) + count
            group = "the gateway's own code (GSEAIGateway)"
        else:
            group = next((group for group, pattern in MODULE_GROUPS if re.match(pattern, module)), module)
        by_group[group] = by_group.get(group, 0) + count
    return by_group, by_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="the bench/profile binary (a release build)")
    parser.add_argument("--gseai", required=True, help="the gseai binary (for the CLI: users, keys)")
    parser.add_argument("--requests", type=int, default=300, help="requests per scenario under callgrind (300)")
    parser.add_argument("--warmup", type=int, default=100, help="requests before counting (100)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (dumps, logs)")
    parser.add_argument("--engine", choices=["nio", "async-http-client"],
                        help="the gateway's upstream client (gseai.upstream.engine; by default nio for http://)")
    parser.add_argument("--top", type=int, default=0, help="also print the N functions with most instructions of their own")
    parser.add_argument("--link-order", metavar="FILE",
                        help="instead: write the functions the gateway runs to start and to answer, in that order, for the "
                             "linker (Sources/gseai/link-order.txt, see Package.swift)")
    options = parser.parse_args()

    bench.in_temporary_folder("gseai-callgrind-", options.keep, lambda folder, processes: run(options, folder, processes))


def run(options, folder: Path, processes: bench.Processes) -> None:
    # valgrind 3.19 cannot read the DWARF of Swift 6's builds ("possibly corrupted debuginfo file"): a copy
    # without it, whose symbol table still names every function.
    stripped = folder / "gseai-profile"
    subprocess.run(["objcopy", "--strip-debug", options.profile, str(stripped)], check=True)
    options.profile = str(stripped)
    block = f"""
        access_log off;
        location = {bench.PATH} {{
            if ($http_accept ~* "event-stream") {{ rewrite ^ /sse last; }}
            default_type application/json;
            return 200 {bench.nginx_string(bench.FIXED_JSON)};
        }}
        location = /sse {{
            internal;
            default_type text/event-stream;
            return 200 {bench.nginx_string(bench.FIXED_SSE)};
        }}"""
    upstream_port = bench.start_nginx(processes, folder / "upstream", block, "1", "the fixed upstream (nginx)")
    database = folder / "gateway.sqlite"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GSEAI_")}
    environment.update({
        "GSEAI_API_TOKEN": bench.TOKEN, "GSEAI_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "GSEAI_UPSTREAM_KIND": "lmstudio", "GSEAI_DATABASE": str(database), "GSEAI_HOST": "127.0.0.1",
        "GSEAI_UPSTREAM_SLOTS": "1024", "GSEAI_QUEUE_CONCURRENCY_PER_USER": "1024",
    })
    if options.engine:
        environment["GSEAI_UPSTREAM_ENGINE"] = options.engine

    def cli(*args: str) -> str:
        result = subprocess.run([options.gseai, *args, "--database", str(database), "--env-file", "none"], capture_output=True,
                                text=True, timeout=120, env=environment, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            sys.exit(f"callgrind: gseai {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    def start(under_valgrind: bool, name: str, from_start: bool = False):
        port = bench.free_port()
        command = [options.profile]
        if under_valgrind:
            # The link order needs the names as the linker sees them: not demangled (C++'s would be).
            instrumentation = ["--demangle=no"] if from_start else ["--instr-atstart=no"]
            command = ["valgrind", "--tool=callgrind", *instrumentation, f"--callgrind-out-file={folder}/callgrind.out",
                       *command]
        log = folder / f"{name}.log"
        process = processes.start(command, log, stdout=subprocess.PIPE, env={**environment, "GSEAI_PORT": str(port)}, cwd=folder)
        bench.read_lines_until(process, r"gseai-profile listening on", 300 if under_valgrind else 30, name, log)
        return process, port

    cli("user", "add", "bench", "--role", "student")
    key = cli("key", "create", "bench", "--name", "bench")
    cli("user", "add", "bench-class", "--role", "student")
    cli("user", "add", "bench-teacher", "--role", "instructor")
    class_key = cli("key", "create", "bench-class", "--name", "bench")
    teacher = cli("key", "create", "bench-teacher", "--name", "bench")
    setup, port = start(False, "setup")
    made = bench.gateway_json(port, teacher, "POST", "/api/classes", json.dumps({"name": "Bench", "policy": bench.CLASS_POLICY}).encode(),
                              "application/json")
    bench.gateway_json(port, teacher, "POST", f"/api/classes/{made['id']}/roster", b"bench-class\n", "text/csv")
    bench.gateway_json(port, class_key, "POST", f"/api/classes/invitations/{made['id']}/accept", b"{}", "application/json")
    setup.terminate()
    setup.wait(timeout=30)

    scenarios = [("plain", False, key), ("stream", True, key), ("class-plain", False, class_key)]
    if options.link_order:
        write_link_order(options, folder, scenarios, lambda: start(True, "callgrind", from_start=True))
        return

    # The time of one instruction: the same binary, no valgrind, one connection, CPU time per request.
    plain, port = start(False, "calibrate")
    connection = bench.Connection(port)
    request = bench.request_bytes(port, False, f"Bearer {key}")
    for _ in range(500):
        connection.exchange(request)
    before = bench.process_cpu_seconds(plain.pid)
    count = 3000
    for _ in range(count):
        status, _, _, _ = connection.exchange(request)
        if status != 200:
            sys.exit(f"callgrind: the gateway answered {status}")
    cpu_us = (bench.process_cpu_seconds(plain.pid) - before) / count * 1e6
    connection.close()
    plain.terminate()
    plain.wait(timeout=30)

    process, port = start(True, "callgrind")
    results = []
    for name, stream, auth in scenarios:
        connection = bench.Connection(port)
        request = bench.request_bytes(port, stream, f"Bearer {auth}")
        for _ in range(options.warmup):
            connection.exchange(request)
        control("--zero", process.pid)
        control("--instr=on", process.pid)
        for _ in range(options.requests):
            status, _, _, content = connection.exchange(request)
            if status != 200 or b"Echo:" not in content:
                sys.exit(f"callgrind: {name}: answered {status} {content[:200]!r}")
        control("--instr=off", process.pid)
        control(f"--dump={name}", process.pid)
        connection.close()
        dumps = sorted(folder.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
        total, rows = annotate(dumps[-1])
        results.append((name, total, rows))

    per_instruction_us = None
    for name, total, rows in results:
        if name == "plain" and total:
            per_instruction_us = cpu_us / (total / options.requests)
    print(f"callgrind, {options.requests} requests per scenario after {options.warmup} of warm-up, one keep-alive connection; "
          f"fixed-bytes upstream (not counted)")
    print(f"calibration: {cpu_us:.1f} µs of CPU per plain request without valgrind over one connection (user and "
          f"system time, with the wake-ups of an idle process): {per_instruction_us * 1000:.2f} ns per instruction, an upper bound")

    def line(label: str, count: float) -> str:
        micro = f"{count * per_instruction_us:8.1f} µs" if per_instruction_us else ""
        return f"  {label:58} {count:11,.0f}  {micro}"

    for name, total, rows in results:
        per_request = total / options.requests
        by_group, by_part = groups(rows)
        print(f"\n{name}: {per_request:,.0f} instructions per request (each function's own instructions, by who runs them)")
        for group, counted in sorted(by_group.items(), key=lambda item: -item[1]):
            if counted / options.requests >= 500:
                print(line(group, counted / options.requests))
        own = sum(by_part.values()) + by_group.get("request log (swift-log)", 0) + by_group.get("metrics (swift-metrics, swift-prometheus)", 0)
        print("  of which the gateway's own work (its code, its log line and metrics; not the runtime's share):")
        for part, counted in sorted(by_part.items(), key=lambda item: -item[1]):
            print(line("  " + part, counted / options.requests))
        print(line("  request log line (swift-log)", by_group.get("request log (swift-log)", 0) / options.requests))
        print(line("  metrics (swift-metrics, swift-prometheus)", by_group.get("metrics (swift-metrics, swift-prometheus)", 0) / options.requests))
        print(line("  sum", own / options.requests))
        # Item 3 of issue 15 names five parts: authentication, policy, usage accounting, request log and metrics.
        named = sum(counted for part, counted in [*by_part.items(), *by_group.items()] if part in ITEM_3_PARTS)
        print(line("  the five parts of issue 15's item 3 (authentication, policy, usage, log, metrics)", named / options.requests))
        if options.top:
            print("  top functions (own instructions):")
            names = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(r[1] for r in rows[:options.top]),
                                   capture_output=True, text=True).stdout.splitlines()
            for (counted, _, _), function in zip(rows[:options.top], names):
                print(f"    {counted / options.requests:11,.0f}  {function[:140]}")


# Libraries that stay shared when `gseai` is linked (Package.swift links Swift's and Foundation's statically).
SHARED_LIBRARIES = re.compile(r"/(libc|libm|libstdc\+\+|libgcc_s|libz|ld-linux[^/]*|libpthread|libdl)[.-][^/]*$")


def executed_functions(dump: Path) -> set[str]:
    """Every function with instructions of its own in a callgrind dump, outside the shared system libraries."""
    _, rows = annotate(dump)
    # Callgrind marks a second function of one name "name'2", and names the frame that calls main "(below
    # main)": neither is a symbol.
    return {name.split("'")[0] for count, name, library in rows
            if count > 0 and not SHARED_LIBRARIES.search(library) and not name.startswith(("0x", "("))}


def write_link_order(options, folder: Path, scenarios, start) -> None:
    """The functions the gateway runs to start, then those it runs to answer each scenario: the linker puts them
    first in the binary's code, in this order, so the pages a gateway touches are few and together (an idle
    gateway's resident memory is mostly the pages of code it ran; bench/README.md, "Start-up and idle memory")."""
    process, port = start()
    control("--dump=start", process.pid)
    for name, stream, auth in scenarios:
        connection = bench.Connection(port)
        request = bench.request_bytes(port, stream, f"Bearer {auth}")
        for _ in range(20):
            status, _, _, content = connection.exchange(request)
            if status != 200 or b"Echo:" not in content:
                sys.exit(f"callgrind: {name}: answered {status} {content[:200]!r}")
        connection.close()
    control("--dump=requests", process.pid)
    process.terminate()
    dumps = sorted(folder.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
    if len(dumps) < 2:
        sys.exit("callgrind: no dumps were written")
    started = executed_functions(dumps[-2])
    answering = executed_functions(dumps[-1]) - started
    lines = ["# Written by `bench/run --link-order` (bench/callgrind.py): the functions `gseai serve` runs to start, then",
             "# those it runs to answer requests. Package.swift passes this file to the linker (--symbol-ordering-file);",
             "# names it no longer finds are skipped, so a stale file only places less code together.",
             *sorted(started), *sorted(answering)]
    Path(options.link_order).write_text("\n".join(lines) + "\n")
    print(f"{options.link_order}: {len(started)} functions run at start, then {len(answering)} more to answer")


def control(argument: str, pid: int) -> None:
    subprocess.run(["callgrind_control", argument, str(pid)], capture_output=True, check=True, timeout=120)
    time.sleep(0.2)



if __name__ == "__main__":
    main()
