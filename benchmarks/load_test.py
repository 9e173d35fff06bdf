"""Load test of `seqrec serve` (FastAPI on uvicorn, micro-batching) against the previous server
(benchmarks/legacy_http_server.py: ThreadingHTTPServer, HTTP/1.0), side by side in one run (issue 15).

    python benchmarks/load_test.py                   # 5,000 requests at concurrency 1, 8, 32, 128 on each server
    python benchmarks/load_test.py --quick           # 300 requests per cell: a smoke test (a scratch file)
    python benchmarks/load_test.py --checkpoint runs/x/best.pt

Traffic goes to 127.0.0.1 only, and every part is bounded: `--requests` per (server, concurrency) cell, a cell
stops after `--cell-timeout-s` (the requests not sent then count as errors), a request fails after
`--request-timeout-s`.

Model: SASRec with configs/sasrec/beauty.yaml's settings (d 64, 2 layers, max_len 50; 12,101 items) trained for
ONE epoch (train.max_epochs=1) into benchmarks/scratch/load_test_sasrec_beauty/ unless --checkpoint is given (the
weights do not change the cost of scoring). Requests: POST /recommend {"histories": [h], "k": 10,
"exclude_history": true} with h a Beauty user's history without its last item (their whole sequence as in the
data: the server reads the last 50), users drawn uniformly with a fixed seed; the same request list for every
cell. Both servers score with PyTorch on one thread; the new one runs with its defaults (1 worker, max batch 256,
max wait 2 ms).

Client: this process, separate from the two server processes (started as subprocesses, both up during the whole
run, idle when not measured): `concurrency` asyncio tasks on raw HTTP/1.1 connections with keep-alive (a new
connection whenever the server closes one, as the old server does after every answer), each sending its next
request when the previous answer is in (closed loop). Latency: from sending the request (connecting first where
needed) to the end of the answer. An answer counts as an error unless it is a 200 with k recommendations. The
cells are interleaved (for each concurrency: old then new, then the next concurrency new then old) so that a
change in the machine's load hits both servers alike; the machine's load average is recorded per cell; the
server's CPU seconds per cell come from /proc. Before the load, both servers answer the same 50 histories and
their top-10 lists are compared.

Goals (issue 15), recorded in the file's `goals`: p99 under 50 ms at concurrency 32; peak throughput (the best
concurrency of each server) at least 3x the old server's; no errors from the new server. At concurrency 1 there is
nothing to batch: both servers are then bound by the scoring time of one history.

Writes benchmarks/results/load_test_sasrec_beauty_cpu.json (quick: benchmarks/scratch/load_test_quick.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402

from seqrec.utils import atomic_write_json  # noqa: E402

HOST = "127.0.0.1"
K = 10
CONCURRENCY = (1, 8, 32, 128)
GOALS = {"p99_ms_at_32": 50.0, "throughput_ratio": 3.0}


# -- the servers ----------------------------------------------------------------------------------------------------

def start_server(kind: str, checkpoint: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    if kind == "new":
        cmd = [sys.executable, "-m", "seqrec.cli", "serve", str(checkpoint), "--host", HOST, "--port", str(port),
               "--workers", str(workers), "--no-access-log"]
    else:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "legacy_http_server.py"), str(checkpoint), "--host", HOST,
               "--port", str(port)]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def server_cpu_s(pid: int) -> float:
    """utime + stime of the process and of its live descendants (uvicorn's workers), in seconds (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]
    except FileNotFoundError:           # it has just exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(map(server_cpu_s, children))


async def wait_up(port: int, path: str, proc: subprocess.Popen, timeout_s: float = 180, in_a_row: int = 1) -> None:
    """Until `path` has answered 200 `in_a_row` times in a row (several workers: each one ready)."""
    end = time.monotonic() + timeout_s
    ok = 0
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            status, _ = await one_request(port, f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            ok = ok + 1 if status == 200 else 0
            if ok >= in_a_row:
                return
        except OSError:
            ok = 0
        await asyncio.sleep(0.05 if ok else 0.2)
    raise SystemExit(f"server on port {port} not up after {timeout_s} s")


# -- the client -----------------------------------------------------------------------------------------------------

def post(history: list[int]) -> bytes:
    body = json.dumps({"histories": [history], "k": K, "exclude_history": True}).encode()
    return (f"POST /recommend HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection open) of one HTTP/1.x answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    keep = version == "HTTP/1.1" and headers.get("connection") != "close" and "content-length" in headers
    return int(status), body, keep


async def one_request(port: int, data: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        status, body, _ = await read_answer(reader)
        return status, body
    finally:
        writer.close()


def valid_answer(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    rows = json.loads(body)["recommendations"]
    return len(rows) == 1 and len(rows[0]) == K


async def run_cell(port: int, requests: list[bytes], concurrency: int, request_timeout_s: float,
                   cell_timeout_s: float) -> dict:
    """Send all `requests` with `concurrency` closed-loop connections; latencies and errors."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_index = 0

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def worker():
        nonlocal next_index
        reader = writer = None
        while next_index < len(requests):
            data = requests[next_index]
            next_index += 1
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(request_timeout_s):
                    if writer is None:
                        reader, writer = await asyncio.open_connection(HOST, port)
                    writer.write(data)
                    status, body, keep = await read_answer(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as e:
                error(type(e).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - t0)
            if not valid_answer(status, body):
                error(f"status {status}")
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=cell_timeout_s)
    wall = time.perf_counter() - t0
    for t in pending:
        t.cancel()
    completed = len(latencies)
    unsent = len(requests) - next_index
    if pending:
        errors["cell timeout (not sent or not answered)"] = len(requests) - completed - sum(errors.values())
    lat_ms = np.asarray(latencies) * 1000
    return {"requests": len(requests), "answered": completed, "errors": sum(errors.values()),
            "errors_by_kind": errors, "unsent": unsent, "wall_s": wall,
            "throughput_rps": completed / wall if wall > 0 else 0.0,
            "latency_ms": {q: float(np.percentile(lat_ms, p)) if len(lat_ms) else None
                           for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
            | {"mean": float(lat_ms.mean()) if len(lat_ms) else None}}


async def batch_stats(port: int) -> tuple[float, float]:
    """(sum, count) of the new server's seqrec_batch_histories histogram."""
    status, body = await one_request(port, f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    text = body.decode()
    get = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # noqa: E731
    return get("seqrec_batch_histories_sum"), get("seqrec_batch_histories_count")


async def compare_answers(ports: dict[str, int], histories: list[list[int]]) -> dict:
    same = 0
    max_score_diff = 0.0
    for h in histories:
        answers = {}
        for kind, port in ports.items():
            status, body = await one_request(port, post(h))
            answers[kind] = json.loads(body)["recommendations"][0]
        if [r["item"] for r in answers["old"]] == [r["item"] for r in answers["new"]]:
            same += 1
            max_score_diff = max(max_score_diff, max(abs(a["score"] - b["score"])
                                                     for a, b in zip(answers["old"], answers["new"])))
    return {"histories": len(histories), "same_top10": same, "max_score_difference": max_score_diff}


# -- the run --------------------------------------------------------------------------------------------------------

def checkpoint_for(args) -> tuple[Path, str]:
    if args.checkpoint:
        return Path(args.checkpoint), f"given: {args.checkpoint}"
    out = ROOT / "benchmarks" / "scratch" / "load_test_sasrec_beauty"
    note = "SASRec, configs/sasrec/beauty.yaml, trained 1 epoch (train.max_epochs=1)"
    if not (out / "best.pt").is_file():
        print(f"training 1 epoch of SASRec on Beauty into {out} ...", flush=True)
        subprocess.run([sys.executable, "-m", "seqrec.cli", "train", "-c", str(ROOT / "configs/sasrec/beauty.yaml"),
                        "--set", "train.max_epochs=1", "--out", str(out), "--overwrite", "--quiet",
                        "--no-baseline"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return out / "best.pt", note


def beauty_histories(path: Path, n: int, seed: int) -> list[list[int]]:
    """n users' histories (their sequence without its last item), users drawn uniformly with replacement."""
    users = [list(map(int, line.split()[1:])) for line in path.read_text().splitlines() if line.strip()]
    users = [u[:-1] for u in users if len(u) >= 2]
    rng = np.random.default_rng(seed)
    return [users[i] for i in rng.integers(0, len(users), n)]


async def main_async(args) -> dict:
    checkpoint, model_note = checkpoint_for(args)
    histories = beauty_histories(Path(args.data), args.requests, args.seed)
    requests = [post(h) for h in histories]
    logs = ROOT / "benchmarks" / "scratch"
    logs.mkdir(parents=True, exist_ok=True)
    ports = {"old": args.port, "new": args.port + 1}
    procs = {kind: start_server(kind, checkpoint, port, logs / f"load_test_{kind}_server.log", args.workers)
             for kind, port in ports.items()}
    try:
        await wait_up(ports["old"], "/health", procs["old"])
        await wait_up(ports["new"], "/ready", procs["new"], in_a_row=1 if args.workers == 1 else 10 * args.workers)
        comparison = await compare_answers(ports, histories[:50])
        for kind in ports:                          # warm-up, not measured
            await run_cell(ports[kind], requests[:200], 8, args.request_timeout_s, args.cell_timeout_s)
        cells = []
        for i, c in enumerate(args.concurrency):
            for kind in (("old", "new") if i % 2 == 0 else ("new", "old")):
                load_before = os.getloadavg()[0]
                cpu0 = server_cpu_s(procs[kind].pid)
                batches0 = await batch_stats(ports["new"]) if kind == "new" else None
                client0 = time.process_time()
                cell = await run_cell(ports[kind], requests, c, args.request_timeout_s, args.cell_timeout_s)
                cell.update(server=kind, concurrency=c, load_average_1min_before=load_before,
                            load_average_1min_after=os.getloadavg()[0],
                            server_cpu_s=server_cpu_s(procs[kind].pid) - cpu0,
                            client_cpu_s=time.process_time() - client0)
                if batches0 is not None:
                    s1, n1 = await batch_stats(ports["new"])
                    calls = n1 - batches0[1]
                    cell.update(scoring_calls=int(calls),
                                mean_histories_per_call=(s1 - batches0[0]) / calls if calls else None)
                cells.append(cell)
                lat = cell["latency_ms"]
                print(f"{kind:>3} c={c:<4} {cell['throughput_rps']:8.1f} req/s  p50 {lat['p50']:7.1f} ms  "
                      f"p99 {lat['p99']:7.1f} ms  errors {cell['errors']}  server CPU {cell['server_cpu_s']:.1f} s  "
                      f"load {load_before:.2f}" + (f"  {cell['mean_histories_per_call']:.1f} histories/call"
                                                   if kind == "new" else ""), flush=True)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"checkpoint": str(checkpoint), "model": model_note, "comparison": comparison, "cells": cells,
            "server_exit_codes": {kind: proc.returncode for kind, proc in procs.items()}}


def summarise(cells: list[dict]) -> dict:
    by = {(c["server"], c["concurrency"]): c for c in cells}
    summary = {}
    for (kind, c), cell in sorted(by.items(), key=lambda x: (x[0][1], x[0][0] != "old")):
        summary[f"{kind} server, concurrency {c}"] = {
            "req/s": cell["throughput_rps"], "p50 ms": cell["latency_ms"]["p50"], "p99 ms": cell["latency_ms"]["p99"],
            "errors": cell["errors"], "server CPU ms/request": 1000 * cell["server_cpu_s"] / max(cell["answered"], 1)}
    ratios = {f"concurrency {c}": by[("new", c)]["throughput_rps"] / by[("old", c)]["throughput_rps"]
              for c in sorted({c for _, c in by}) if ("new", c) in by and ("old", c) in by
              and by[("old", c)]["throughput_rps"] > 0}
    summary["throughput new / old"] = ratios
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a trained checkpoint (default: 1 epoch of SASRec on Beauty, trained once)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Beauty.txt"),
                    help="Beauty.txt (S3-Rec format), where the request histories come from")
    ap.add_argument("--requests", type=int, default=5000, help="requests per (server, concurrency) cell")
    ap.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    ap.add_argument("--port", type=int, default=18620, help="old server's port; the new one's is the next")
    ap.add_argument("--workers", type=int, default=1, help="the new server's --workers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--request-timeout-s", type=float, default=30.0)
    ap.add_argument("--cell-timeout-s", type=float, default=180.0)
    ap.add_argument("--quick", action="store_true", help="300 requests per cell, result in benchmarks/scratch")
    ap.add_argument("--out", help="result file (default benchmarks/results/load_test_sasrec_beauty_cpu.json)")
    args = ap.parse_args()
    if args.quick:
        args.requests = 300
    name = "load_test_sasrec_beauty_cpu" + (f"_{args.workers}workers" if args.workers > 1 else "")
    out = Path(args.out) if args.out else (ROOT / "benchmarks" / ("scratch/load_test_quick.json" if args.quick
                                                                 else f"results/{name}.json"))
    load_at_start = list(os.getloadavg())
    run = asyncio.run(main_async(args))
    cells = run.pop("cells")
    summary = summarise(cells)
    new32 = next((c for c in cells if c["server"] == "new" and c["concurrency"] == 32), None)
    peak = {kind: max(c["throughput_rps"] for c in cells if c["server"] == kind) for kind in ("old", "new")}
    summary["peak throughput"] = {"old req/s": peak["old"], "new req/s": peak["new"],
                                  "new / old": peak["new"] / peak["old"]}
    goals = {"p99 under 50 ms at concurrency 32": None if new32 is None else
             new32["latency_ms"]["p99"] < GOALS["p99_ms_at_32"],
             "peak throughput at least 3x the old server's": peak["new"] >= GOALS["throughput_ratio"] * peak["old"],
             "zero errors (new server)": all(c["errors"] == 0 for c in cells if c["server"] == "new")}
    result = {"name": out.stem, "kind": "speed", "benchmark": "load_test", "method": "sasrec", "dataset": "Beauty",
              "description": "`seqrec serve` (FastAPI/uvicorn, micro-batching) vs the previous ThreadingHTTPServer "
                             f"on 127.0.0.1, {args.requests} POST /recommend requests (k {K}, exclude_history, "
                             "one Beauty history each) per concurrency, closed loop, keep-alive client in another "
                             "process; 2-core machine, 1-minute load average "
                             f"{min(c['load_average_1min_before'] for c in cells):.1f}-"
                             f"{max(c['load_average_1min_after'] for c in cells):.1f} during the cells.",
              "protocol": {"requests_per_cell": args.requests, "concurrency": args.concurrency, "k": K,
                           "exclude_history": True, "request": "POST /recommend, one history per request",
                           "client": "asyncio, raw HTTP/1.1, keep-alive, closed loop, separate process",
                           "new_server": f"seqrec serve --workers {args.workers} --max-batch 256 --max-wait-ms 2 "
                                         "--no-access-log",
                           "old_server": "benchmarks/legacy_http_server.py (ThreadingHTTPServer, HTTP/1.0)",
                           "seed": args.seed, "request_timeout_s": args.request_timeout_s,
                           "cell_timeout_s": args.cell_timeout_s},
              **run, "goals": goals, "summary": summary, "cells": cells,
              "load_average_at_start": load_at_start, **provenance(threads=1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(json.dumps(goals))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
