"""The HTTP service answers like the in-process Recommender, and rejects bad input with a 400 and a message.
Traffic only to 127.0.0.1, on a port the OS picks, a handful of bounded requests."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from conftest import TINY
from seqrec.cli import main
from seqrec.serve import Recommender
from seqrec.serve.http import make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", *sets, "--set", "train.max_epochs=1", "--out", str(out), "--quiet"]) == 0
    rec = Recommender.from_checkpoint(out / "best.pt")
    srv = make_server(rec, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield rec, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(url: str, obj) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_get_matches_recommender(server):
    rec, base = server
    status, body = get(f"{base}/recommend?history=3,5,7&k=4&exclude_history=1")
    assert status == 200
    expected = rec.recommend([3, 5, 7], 4, exclude_history=True)
    assert [r["item"] for r in body["recommendations"][0]] == [i for i, _ in expected]
    assert not {3, 5, 7} & {r["item"] for r in body["recommendations"][0]}


def test_post_batch(server):
    rec, base = server
    status, body = post(f"{base}/recommend", {"histories": [[1, 2], [9]], "k": 3})
    assert status == 200 and len(body["recommendations"]) == 2
    assert [r["item"] for r in body["recommendations"][1]] == [i for i, _ in rec.recommend([9], 3)]


@pytest.mark.parametrize("path,needle", [("/recommend?history=1,x", "history"), ("/recommend", "missing"),
                                         ("/recommend?history=999999", "outside"), ("/nope", "unknown path")])
def test_get_errors(server, path, needle):
    status, body = get(server[1] + path)
    assert status in (400, 404) and needle in body["error"]


def test_post_errors_and_health(server):
    status, body = post(server[1] + "/recommend", {"histories": [1, 2]})
    assert status == 400 and "list of lists" in body["error"]
    status, body = get(server[1] + "/health")
    assert status == 200 and body["status"] == "ok"
