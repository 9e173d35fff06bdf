"""The HTTP service (seqrec.serve.app on uvicorn): answers like the in-process Recommender, batches concurrent
requests into fewer scoring calls with the same answers, and answers every bad request with a JSON 4xx (never a
dropped connection or a hang), internal errors with a JSON 500. Traffic only to 127.0.0.1, on ports the OS picks,
a bounded number of requests."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient

from conftest import TINY, tiny_config
from seqrec.cli import main
from seqrec.serve import Recommender
from seqrec.serve.app import create_app
from seqrec.serve.batching import MicroBatcher
from seqrec.serve.server import bind, uvicorn_config

ROOT = Path(__file__).resolve().parents[1]


class FakeRecommender:
    """A recommender with a hand-made order: history h scores item i (1..n_items) as ((i * 7 + sum of h's integer
    ids) % n_items), ties by lower id; records the size of each call; histories holding "boom" raise."""

    def __init__(self, n_items: int = 40, delay_s: float = 0.0):
        self.n_items = n_items
        self.delay_s = delay_s
        self.calls: list[int] = []

    def recommend_batch(self, histories, k=10, exclude_history=False):
        self.calls.append(len(histories))
        time.sleep(self.delay_s)
        out = []
        for h in histories:
            if "boom" in h:
                raise RuntimeError("boom")
            base = sum(x for x in h if isinstance(x, int))
            items = [i for i in range(1, self.n_items + 1) if not (exclude_history and i in h)]
            ranked = sorted(items, key=lambda i: (-((i * 7 + base) % self.n_items), i))
            out.append([(i, float((i * 7 + base) % self.n_items)) for i in ranked[:k]])
        return out


@pytest.fixture(scope="module")
def tiny_recommender():
    from seqrec.models import DatasetInfo, build_model
    torch.manual_seed(0)
    cfg = tiny_config()
    return Recommender(build_model(cfg.model, DatasetInfo(60)))


def wait_ready(client, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < end, "the app did not become ready"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def client(tiny_recommender):
    with TestClient(create_app(tiny_recommender, max_batch=8), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def items(rows):
    return [[r["item"] for r in row] for row in rows]


# -- answers ------------------------------------------------------------------------------------------------------

def test_get_and_post_answer_like_the_recommender(client, tiny_recommender):
    r = client.get("/recommend?history=3,5,7&k=4&exclude_history=true")
    assert r.status_code == 200, r.text
    expected = tiny_recommender.recommend([3, 5, 7], 4, exclude_history=True)
    assert items(r.json()["recommendations"]) == [[i for i, _ in expected]]
    assert [x["score"] for x in r.json()["recommendations"][0]] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert not {3, 5, 7} & set(items(r.json()["recommendations"])[0])
    for flag, exclude in (("false", False), ("0", False), ("1", True)):
        r = client.get(f"/recommend?history=3,5,7&k=4&exclude_history={flag}")
        assert items(r.json()["recommendations"])[0] == \
            [i for i, _ in tiny_recommender.recommend([3, 5, 7], 4, exclude_history=exclude)]
    r = client.post("/recommend", json={"histories": [[1, 2], [9]], "k": 3, "exclude_history": False})
    assert r.status_code == 200
    assert items(r.json()["recommendations"]) == [[i for i, _ in tiny_recommender.recommend(h, 3)]
                                                  for h in ([1, 2], [9])]


BAD_POSTS = [
    ("[1, 2]", 422, "expected a JSON object"),
    ("null", 422, "expected a JSON object"),
    ('"histories"', 422, "expected a JSON object"),
    ("", 422, "empty body"),
    ('{"histories": []}', 422, "histories: List should have at least 1 item"),
    ('{"histories": [[]]}', 422, "histories[0]: List should have at least 1 item"),
    ('{"histories": [1, 2]}', 422, "histories[0]"),
    ('{"histories": [[1e30]]}', 422, "histories[0][0]: expected an item id (an integer or a string), got 1e+30"),
    ('{"histories": [[2.0]]}', 422, "got 2.0"),
    ('{"histories": [[1000000000000000000000000000000]]}', 422, "outside the 64-bit integer range"),
    ('{"histories": [[true]]}', 422, "got true"),
    ('{"histories": [[""]]}', 422, "empty string"),
    ('{"histories": [[1, null]]}', 422, "histories[0][1]"),
    ('{"histories": [[1]], "exclude_history": "false"}', 422, "exclude_history: Input should be a valid boolean"),
    ('{"histories": [[1]], "exclude_history": 0}', 422, "exclude_history"),
    ('{"histories": [[1]], "k": "10"}', 422, "k: Input should be a valid integer"),
    ('{"histories": [[1]], "k": 2.5}', 422, "k: Input should be a valid integer"),
    ('{"histories": [[1]], "k": -1}', 422, "k: expected an integer in 1..60"),
    ('{"histories": [[1]], "k": 0}', 422, "k: expected an integer in 1..60"),
    ('{"histories": [[1]], "k": 100000000000}', 422, "k: expected an integer in 1..60"),
    ('{"histories": [[1]], "exclude": true}', 422, "exclude: unknown field"),
    ('{"histories": [[1, 999]]}', 422, "unknown item id 999"),
    ('{"histories": [[1], [2, "x"]]}', 422, "history 2 of 2"),
    ('{"histories": [[1], [2], [3], [4], [5], [6], [7], [8], [9]]}', 422, "at most 8 per request"),
    ('{"histories": [[1]', 400, "invalid JSON"),
    ('{"histories": [[NaN]]}', 422, "histories[0][0]"),
]


@pytest.mark.parametrize("body,status,needle", BAD_POSTS)
def test_bad_post_bodies_get_a_json_error(client, body, status, needle):
    r = client.post("/recommend", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert needle in r.json()["error"]
    assert "\n" not in r.json()["error"]


@pytest.mark.parametrize("query,status,needle", [
    ("history=1,2&exclude_history=True", 422, "exclude_history: Input should be 'true', 'false', '1' or '0'"),
    ("history=1,2&exclude_history=yes", 422, "exclude_history"),
    ("history=1,2&exclude_history=", 422, "exclude_history"),
    ("history=1,2&k=1.5", 422, "k: expected a whole number"),
    ("history=1,2&k=10.0", 422, "k: expected a whole number"),
    ("history=1,2&k=-3", 422, "k: expected a whole number"),
    ("history=1,2&k=0", 422, "k: expected an integer in 1..60"),
    ("history=1,,2", 422, "empty item id at position 2"),
    ("history=1e30", 422, "unknown item id"),
    ("history=", 422, "empty item id"),
    ("k=3", 422, "history: Field required"),
])
def test_bad_queries_get_a_json_error(client, query, status, needle):
    r = client.get("/recommend?" + query)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_other_bad_requests(client):
    r = client.post("/recommend", content='{"histories": [[1]]}',
                    headers={"Content-Type": "application/x-www-form-urlencoded"})      # curl -d without -H
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]
    r = client.get("/nope")
    assert r.status_code == 404 and "unknown path /nope" in r.json()["error"]
    r = client.delete("/recommend")
    assert r.status_code == 405 and "DELETE" in r.json()["error"]


def test_health_ready_metrics_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["n_items"] == 60 and ready["model"] == "Recommender"
    before = client.get("/metrics").text
    client.post("/recommend", json={"histories": [[1, 2]], "k": 2})
    client.post("/recommend", json={"histories": []})
    client.get("/some/random/path")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text

    def value(name: str, page: str) -> float:
        lines = [line for line in page.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")
                 and line.split(" ")[0] == name]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    ok = 'seqrec_http_requests_total{method="POST",path="/recommend",status="200"}'
    bad = 'seqrec_http_requests_total{method="POST",path="/recommend",status="422"}'
    assert value(ok, text) == value(ok, before) + 1
    assert value(bad, text) == value(bad, before) + 1
    assert 'path="other",status="404"' in text                   # random paths share one label
    assert value("seqrec_batch_histories_count", text) >= 1
    assert value('seqrec_http_request_duration_seconds_count{method="POST",path="/recommend"}', text) >= 2
    assert value("seqrec_ready", text) == 1.0
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


def test_internal_error_is_a_json_500():
    with TestClient(create_app(FakeRecommender()), raise_server_exceptions=False) as c:
        wait_ready(c)
        r = c.post("/recommend", json={"histories": [["boom"]]})
        assert r.status_code == 500
        assert r.json() == {"error": "internal error (RuntimeError); the server log has the details"}
        assert 'status="500"' in c.get("/metrics").text
        assert c.post("/recommend", json={"histories": [[1]]}).status_code == 200     # and it goes on


def test_ready_only_after_loading_and_warm_up():
    release = threading.Event()
    fake = FakeRecommender()

    def load():
        release.wait(10)
        return fake

    with TestClient(create_app(load, load_wait_s=0), raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200                  # alive while loading
        assert c.get("/ready").json()["status"] == "loading" and c.get("/ready").status_code == 503
        r = c.post("/recommend", json={"histories": [[1]]})
        assert r.status_code == 503 and "loading" in r.json()["error"]
        release.set()
        wait_ready(c)
        assert fake.calls == [1]                                    # the warm-up call

    # with a load wait, a request that arrives while the model loads is answered once it has loaded
    release.clear()
    with TestClient(create_app(load, load_wait_s=10), raise_server_exceptions=False) as c:
        answers = []
        waiting = threading.Thread(target=lambda: answers.append(c.post("/recommend", json={"histories": [[1]]})))
        waiting.start()
        time.sleep(0.2)
        assert c.get("/ready").json()["status"] == "loading" and not answers    # still waiting, not refused
        release.set()
        waiting.join(10)
        assert answers and answers[0].status_code == 200
    # a load that fails ends the wait at once, with the load's error
    release.clear()

    def broken_later():
        release.wait(10)
        raise FileNotFoundError("best.pt")

    with TestClient(create_app(broken_later, load_wait_s=30), raise_server_exceptions=False) as c:
        answers = []
        waiting = threading.Thread(target=lambda: answers.append(c.post("/recommend", json={"histories": [[1]]})))
        waiting.start()
        time.sleep(0.2)
        assert not answers
        t0 = time.monotonic()
        release.set()
        waiting.join(10)
        assert answers and answers[0].status_code == 503 and "best.pt" in answers[0].json()["error"]
        assert time.monotonic() - t0 < 5
    # ... and one whose wait runs out gets the 503
    release.clear()
    with TestClient(create_app(load, load_wait_s=0.1), raise_server_exceptions=False) as c:
        r = c.post("/recommend", json={"histories": [[1]]})
        assert r.status_code == 503 and "loading" in r.json()["error"]
        release.set()

    def broken():
        raise FileNotFoundError("best.pt")

    with TestClient(create_app(broken), raise_server_exceptions=False) as c:
        end = time.monotonic() + 10
        while c.get("/ready").json()["status"] == "loading" and time.monotonic() < end:
            time.sleep(0.01)
        assert c.get("/ready").json()["status"] == "failed"
        assert c.get("/health").status_code == 503 and "best.pt" in c.get("/health").json()["error"]


# -- micro-batching -----------------------------------------------------------------------------------------------

def test_batcher_scores_concurrent_requests_together():
    fake = FakeRecommender(delay_s=0.01)

    async def run():
        b = MicroBatcher(fake.recommend_batch, max_batch=64, max_wait_ms=50)
        b.start()
        histories = [[i, i + 1] for i in range(1, 31)]
        ks = [1 + i % 5 for i in range(30)]
        answers = await asyncio.gather(*(b.submit([h], k, i % 2 == 0) for i, (h, k) in enumerate(zip(histories, ks))))
        await b.stop()
        return histories, ks, answers

    histories, ks, answers = asyncio.run(run())
    assert len(fake.calls) < 30 / 2                              # 30 requests, two exclude_history groups
    assert sum(fake.calls) == 30
    unbatched = FakeRecommender()
    for i, (h, k, got) in enumerate(zip(histories, ks, answers)):
        assert got == unbatched.recommend_batch([h], k, i % 2 == 0)


def test_batcher_bounds_batches_and_isolates_failures():
    fake = FakeRecommender()

    async def run():
        b = MicroBatcher(fake.recommend_batch, max_batch=4, max_wait_ms=20)
        b.start()
        arrivals = [b.announce() for _ in range(10)]                 # all on their way: the batch waits for them
        results = await asyncio.gather(*(b.submit([[i]] if i != 5 else [["boom"]], 3, False, a)
                                         for i, a in enumerate(arrivals)), return_exceptions=True)
        await b.stop()
        return results

    results = asyncio.run(run())
    assert isinstance(results[5], RuntimeError)
    reference = FakeRecommender()
    assert [r for i, r in enumerate(results) if i != 5] == [reference.recommend_batch([[i]], 3)
                                                             for i in range(10) if i != 5]
    # batches of at most max_batch histories: 0-3, 4-7 (fails: 5 is bad; retried one by one), 8-9
    assert fake.calls == [4, 4, 1, 1, 1, 1, 2]


def test_lone_request_does_not_wait():
    fake = FakeRecommender()

    async def run():
        b = MicroBatcher(fake.recommend_batch, max_batch=64, max_wait_ms=500)
        b.start()
        t0 = time.perf_counter()
        await b.submit([[1]], 3, False)
        elapsed = time.perf_counter() - t0
        await b.stop()
        return elapsed

    assert asyncio.run(run()) < 0.25           # nothing else on its way: scored at once, not after 500 ms


# -- over a real socket: uvicorn, the HTTP parser's errors, limits, timeouts ---------------------------------------

@contextmanager
def serving(app, keep_alive_s: float = 5):
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, sock, keep_alive_s=keep_alive_s, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        while httpx.get(f"http://127.0.0.1:{port}/ready").status_code != 200:
            time.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        thread.join(15)


def raw_request(port: int, data: bytes, timeout_s: float = 10.0) -> tuple[int, dict]:
    """Send bytes as they are; (status, JSON body) of the answer (read until the body is complete or closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"connection closed without an answer: {buf!r}"
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        assert headers.get("content-type") == "application/json", head
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = s.recv(65536)
            assert chunk
            body += chunk
        return int(lines[0].split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def live():
    app = create_app(FakeRecommender(), max_body_bytes=10_000, read_timeout_s=0.5)
    with serving(app, keep_alive_s=1) as (server, port):
        yield port


POST_HEAD = b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


BIG = "larger than 10000 bytes"


@pytest.mark.parametrize("data,status,needle", [
    pytest.param(POST_HEAD + b"Content-Length: abc\r\n\r\n{}", 400, "invalid HTTP", id="bad-length"),
    pytest.param(POST_HEAD + b"Content-Length: -5\r\n\r\n{}", 400, "invalid HTTP", id="negative-length"),
    pytest.param(POST_HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n{}", 400, "invalid HTTP",
                 id="two-lengths"),
    pytest.param(b"GARBAGE\r\n\r\n", 400, "invalid HTTP", id="garbage"),
    pytest.param(POST_HEAD + b"Content-Length: 100\r\n\r\n" + b'{"histories": [[1]]}', 408, "read timeout",
                 id="length-over-body"),
    pytest.param(POST_HEAD + b"Content-Length: 20000\r\nExpect: 100-continue\r\n\r\n", 413, BIG,
                 id="expect-continue-too-large"),
    pytest.param(POST_HEAD + b"Content-Length: 50000000\r\n\r\n" + b" " * 50_000_000, 413, BIG, id="50MB-body"),
    pytest.param(POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b" " * 4096 + b"\r\n" +
                 b"3000\r\n" + b" " * 12288 + b"\r\n0\r\n\r\n", 413, BIG, id="chunked-too-large"),
    pytest.param(b"GET /recommend?history=" + b"1," * 6000 + b"1 HTTP/1.1\r\nHost: x\r\n\r\n", 414,
                 "query string longer", id="long-query"),
    pytest.param(POST_HEAD + b"Content-Length: 23\r\n\r\n" + b'{"histories": [[1.5]]}\n', 422, "got 1.5",
                 id="float-id"),
])
def test_protocol_errors_limits_and_timeouts_get_json(live, data, status, needle):
    got, body = raw_request(live, data)
    assert got == status and needle in body["error"], body


def test_keep_alive_and_idle_connections(live):
    with httpx.Client(base_url=f"http://127.0.0.1:{live}") as c:      # one connection, reused
        answers = [c.post("/recommend", json={"histories": [[i]], "k": 2}) for i in range(3)]
        assert all(a.status_code == 200 and a.http_version == "HTTP/1.1" for a in answers)
        assert "close" not in answers[-1].headers.get("connection", "")
    for start in (b"", b"GET /health HTTP/1.1\r\nHo"):    # sends nothing, or stops in the middle of its headers
        with socket.create_connection(("127.0.0.1", live), timeout=5) as s:
            s.sendall(start)
            t0 = time.monotonic()
            assert s.recv(10) == b""                                      # closed by the server (keep-alive 1 s)
            assert time.monotonic() - t0 < 4


def test_concurrent_http_requests_are_batched_with_unbatched_answers(tiny_recommender):
    calls = []

    class Counting:
        n_items = tiny_recommender.n_items
        item_vocab = tiny_recommender.item_vocab

        def recommend_batch(self, histories, k, exclude_history):
            calls.append(len(histories))
            time.sleep(0.005)             # a slower model: requests pile up meanwhile
            return tiny_recommender.recommend_batch(histories, k, exclude_history)

        encode_histories = tiny_recommender.encode_histories

    requests = [([1 + i % 50, 2 + i % 7, 3 + i % 11], 1 + i % 6, i % 3 == 0) for i in range(48)]
    with serving(create_app(Counting(), max_wait_ms=20)) as (server, port):
        calls.clear()

        async def fire():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                return await asyncio.gather(*(c.post("/recommend", json={"histories": [h], "k": k,
                                                                          "exclude_history": e})
                                              for h, k, e in requests))

        answers = asyncio.run(fire())
    assert all(a.status_code == 200 for a in answers)
    assert sum(calls) == 48 and len(calls) < 48 / 2
    for (h, k, e), a in zip(requests, answers):
        got = a.json()["recommendations"][0]
        expected = tiny_recommender.recommend(h, k, exclude_history=e)
        assert [r["item"] for r in got] == [i for i, _ in expected]
        assert [r["score"] for r in got] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_graceful_shutdown_answers_requests_in_progress():
    app = create_app(FakeRecommender(delay_s=0.5))
    with serving(app) as (server, port):
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"http://127.0.0.1:{port}/recommend", json={"histories": [[1]]},
                                  timeout=10)
            time.sleep(0.2)
            server.should_exit = True                                 # what SIGINT / SIGTERM do
            assert pending.result().status_code == 200


# -- the command line ---------------------------------------------------------------------------------------------

def test_cli_port_in_use_and_bad_options_are_one_line_errors(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "no-such.pt", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already in use" in err and str(port) in err
    for option in (["--max-batch", "0"], ["--max-wait-ms", "-1"], ["--workers", "0"], ["--read-timeout-s", "0"],
                   ["--load-wait-s", "-1"],
                   ["--port", "70000"], ["--host", "no.such.host.invalid"]):
        assert main(["serve", "no-such.pt", "--port", "0", *option]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and option[0] in err
    assert main(["serve", "no-such.pt", "--port", "0"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_serves_with_two_workers_and_stops_on_sigint(tmp_path):
    """The whole path: train a tiny model, `seqrec serve --workers 2` in a subprocess, requests, metrics added
    up over the workers, SIGINT -> exit 0."""
    out = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", *sets, "--set", "train.max_epochs=1", "--out", str(out), "--quiet"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "seqrec.cli", "serve", str(out / "best.pt"), "--port", "0",
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" on ")[1].split()[0]
        end = time.monotonic() + 60
        ready = 0
        while ready < 4:            # both workers loaded (requests land on either)
            assert time.monotonic() < end and proc.poll() is None
            try:
                ready = ready + 1 if httpx.get(url + "/ready", timeout=5).status_code == 200 else 0
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        for _ in range(6):
            r = httpx.get(url + "/recommend", params={"history": "1,2,3", "k": "3"}, timeout=10)
            assert r.status_code == 200 and len(r.json()["recommendations"][0]) == 3
        metrics = httpx.get(url + "/metrics", timeout=10).text
        line = next(x for x in metrics.splitlines()
                    if x.startswith('seqrec_http_requests_total{method="GET",path="/recommend",status="200"}'))
        assert float(line.rsplit(" ", 1)[1]) == 6.0                   # both workers' requests
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        finally:
            proc.kill()
    assert code == 0


class RecordingTransport:
    """What the protocol writes, for a protocol driven by hand (no socket)."""

    def __init__(self):
        self.written, self.closed = b"", False

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.mark.parametrize("protocol", ["JsonErrorsH11Protocol", "JsonErrorsHttpToolsProtocol"])
def test_endless_headers_get_a_json_400(protocol):
    import seqrec.serve.server as server_module
    from uvicorn.server import ServerState
    if not hasattr(server_module, protocol):
        pytest.skip("httptools is not installed")
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(create_app(FakeRecommender()), log_level="warning")
        proto = getattr(server_module, protocol)(config, ServerState(), {}, _loop=loop)
        transport = RecordingTransport()
        proto.connection_made(transport)
        proto.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):                                    # 20 x 10 KB of headers, never finished
            if transport.closed:
                break
            proto.data_received(b"X-Fill: " + b"a" * 10_000 + b"\r\n")
        assert transport.closed
        head, body = transport.written.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
        assert "headers too large" in json.loads(body)["error"]
    finally:
        loop.close()
