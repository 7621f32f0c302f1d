"""Bounded load run of `blur-retrieval serve`: N searches from C concurrent clients, loopback only.

    python scripts/serve_load.py INDEX_DIR QUERY_DIR [--requests 500] [--clients 8]
        [--out docs/figures/serve_load.json]

Starts the server on 127.0.0.1 (a free port), waits for /health, sends a few warm-up searches,
then REQUESTS POSTs to /search (one query image each, cycling through the images under
QUERY_DIR, k=10) from CLIENTS threads, and reports throughput, p50/p99 latency and errors.
Only the standard library is used on the client side, so the client costs little CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MAX_REQUESTS = 5000
MAX_CLIENTS = 64
WARMUP = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("query_dir", type=Path)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/serve_load.json"))
    args = parser.parse_args()
    if not (1 <= args.requests <= MAX_REQUESTS and 1 <= args.clients <= MAX_CLIENTS):
        parser.error(f"--requests must be 1..{MAX_REQUESTS} and --clients 1..{MAX_CLIENTS}")
    queries = sorted(p for p in args.query_dir.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not queries:
        parser.error(f"{args.query_dir}: no .png or .jpg images")
    bodies = [_multipart(path) for path in queries]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "benchmark.commands", "serve", str(args.index_dir),
                               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        health = _wait_for(base, server)
        for i in range(WARMUP):
            _search(base, bodies[i % len(bodies)], args.k)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            outcomes = list(pool.map(lambda i: _search(base, bodies[i % len(bodies)], args.k),
                                     range(args.requests)))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = _report(outcomes, wall, args, health, len(queries))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("requests", "clients", "throughput_rps",
                                                   "latency_ms", "errors")}, indent=2))
    print(f"wrote {args.out}")


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() \
        + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _search(base: str, body: tuple[bytes, str], k: int) -> tuple[float, str | None]:
    """(seconds, None) for a 200 with a result, else (seconds, what went wrong)."""
    request = urllib.request.Request(f"{base}/search?k={k}", data=body[0], method="POST",
                                     headers={"Content-Type": body[1]})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        problem = None if len(answer["results"]) == 1 and answer["results"][0]["hits"] else "no hits"
    except urllib.error.HTTPError as error:
        problem = f"HTTP {error.code}"
    except (OSError, ValueError, KeyError) as error:
        problem = f"{type(error).__name__}: {error}"
    return time.perf_counter() - started, problem


def _wait_for(base: str, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server stopped: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                return json.load(response)
        except OSError:
            time.sleep(0.5)
    server.terminate()
    sys.exit("the server did not answer /health within 120 s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _report(outcomes: list[tuple[float, str | None]], wall: float, args: argparse.Namespace,
            health: dict, query_count: int) -> dict:
    latencies = sorted(seconds * 1000 for seconds, _ in outcomes)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")  # cuts[i]: percentile i + 1
    errors: dict[str, int] = {}
    for _, problem in outcomes:
        if problem is not None:
            errors[problem] = errors.get(problem, 0) + 1
    return {
        "requests": args.requests,
        "clients": args.clients,
        "k": args.k,
        "warmup_requests": WARMUP,
        "wall_s": round(wall, 3),
        "throughput_rps": round(args.requests / wall, 2),
        "latency_ms": {"p50": round(cuts[49], 1), "p99": round(cuts[98], 1),
                       "max": round(latencies[-1], 1)},
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "query_images": query_count,
        "index": health["index"],
        "model": health["model"],
        "device": health["device"],
        "machine": {"cpus": os.cpu_count(), "load_average_1min_after": round(os.getloadavg()[0], 2),
                    "platform": platform.platform(), "python": platform.python_version()},
    }


if __name__ == "__main__":
    main()
