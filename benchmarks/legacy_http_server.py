"""The previous `seqrec serve` (until issue 15), kept only as the baseline of benchmarks/load_test.py: a JSON
HTTP service on the standard library's ThreadingHTTPServer (HTTP/1.0, a thread per connection, no keep-alive,
listen backlog 5). Do not use it to serve: seqrec.serve.app is the service.

    python benchmarks/legacy_http_server.py runs/x/best.pt --port 8080

The code below is the old src/seqrec/serve/http.py unchanged (its bad-input handling included), plus main().
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from seqrec.errors import SeqrecError
from seqrec.serve.recommender import Recommender


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SeqrecError(f"{name}: expected an integer, got {value!r}") from None


def make_handler(rec: Recommender):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self, histories, k, exclude) -> None:
            top = rec.recommend_batch(histories, k, exclude)
            self._send(200, {"recommendations": [[{"item": i, "score": s} for i, s in row] for row in top]})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            q = parse_qs(url.query)
            try:
                if url.path == "/health":
                    return self._send(200, {"status": "ok", "n_items": rec.n_items})
                if url.path != "/recommend":
                    return self._send(404, {"error": f"unknown path {url.path}; valid: /recommend, /health"})
                if "history" not in q:
                    raise SeqrecError("history: missing, e.g. /recommend?history=12,7,93&k=10")
                history = [_int(t, "history") for t in q["history"][0].replace(" ", ",").split(",") if t]
                self._answer([history], _int(q.get("k", ["10"])[0], "k"), q.get("exclude_history", ["0"])[0] == "1")
            except SeqrecError as e:
                self._send(400, {"error": str(e)})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/recommend":
                return self._send(404, {"error": "unknown path; valid: POST /recommend"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError as e:
                    raise SeqrecError(f"request body: invalid JSON ({e.msg})") from None
                histories = body.get("histories")
                if not isinstance(histories, list) or not all(isinstance(h, list) for h in histories):
                    raise SeqrecError('histories: expected a list of lists of item ids, e.g. {"histories": [[1, 2]]}')
                self._answer([[_int(i, "histories") for i in h] for h in histories], _int(body.get("k", 10), "k"),
                             bool(body.get("exclude_history", False)))
            except SeqrecError as e:
                self._send(400, {"error": str(e)})

        def log_message(self, fmt, *args) -> None:   # quiet by default
            pass

    return Handler


def make_server(rec: Recommender, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(rec))


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description="the previous seqrec HTTP server (a load-test baseline)")
    p.add_argument("checkpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    server = make_server(Recommender.from_checkpoint(args.checkpoint), args.host, args.port)
    print(f"serving {args.checkpoint} on http://{args.host}:{server.server_port} (legacy server; Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
