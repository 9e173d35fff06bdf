"""Run the HTTP service (seqrec.serve.app) on uvicorn: `seqrec serve CHECKPOINT`.

The listening socket is bound here, before uvicorn starts, so that a port in use is one clear error (exit 2) and
not a traceback; uvicorn then serves on that socket (HTTP/1.1 with keep-alive; the keep-alive timeout also closes
connections that send nothing). With `workers` > 1 uvicorn starts that many processes on the one socket, each
building its app with seqrec.serve.app.app_from_env from the settings passed in the SEQREC_SERVE environment
variable, and the metrics of all workers are added up (prometheus_client's multiprocess mode, in a temporary
folder). Ctrl-C / SIGTERM stop gracefully: no new connections, requests in progress are answered (for up to
GRACEFUL_SHUTDOWN_S), then the batcher is drained and stopped.

Requests that the HTTP parser itself refuses (a malformed request line, header or Content-Length, headers over
16 KB with h11 or about MAX_HEADER_BYTES with httptools) get a JSON 400 too: the protocol classes below replace
uvicorn's plain-text answer. A connection whose request line and headers stop arriving for the keep-alive
timeout is closed (one that sends a few bytes each time within it keeps its connection, not a thread).
"""
from __future__ import annotations

import errno
import gc
import inspect
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from seqrec.errors import SeqrecError

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:                     # httptools is optional (uvicorn falls back to h11 likewise)
    HttpToolsProtocol = None

BACKENDS = ("torch", "onnx")
GRACEFUL_SHUTDOWN_S = 10
WORKER_STARTUP_S = 60
MAX_HEADER_BYTES = 64 * 1024
ONNX_K = 100
"""k of the graph when `--backend onnx` is given a checkpoint rather than an exported file (requests: k <= this)."""


def loader(checkpoint: str, backend: str = "torch") -> Callable[[], object]:
    """A function loading the recommender of `checkpoint` with `backend` (torch: a trained checkpoint, scored by
    PyTorch with one thread; onnx: a file written by `seqrec export --format onnx`, or a checkpoint exported in
    memory with k ONNX_K, scored by onnxruntime with one thread)."""
    if backend not in BACKENDS:
        raise SeqrecError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")

    def load():
        if backend == "onnx":
            try:
                from seqrec.serve.export import OnnxRecommender
            except ImportError as e:
                raise SeqrecError(f"--backend onnx: not available ({e})") from None
            if Path(checkpoint).suffix == ".onnx":     # written by seqrec export
                recommender = OnnxRecommender.from_file(checkpoint, threads=1)
            else:                                       # a checkpoint: exported in memory (a few seconds)
                recommender = OnnxRecommender.from_checkpoint(checkpoint, k=ONNX_K, threads=1)
        else:
            import torch
            from seqrec.serve.recommender import Recommender
            torch.set_num_threads(1)    # one scoring thread; more only slowed these models down on 2 cores
            recommender = Recommender.from_checkpoint(checkpoint)
        # a serving process: what exists now (libraries, the model) stays out of later garbage collections,
        # each of which would otherwise scan it all again (pauses of several ms in the latency tail)
        gc.collect()
        gc.freeze()
        return recommender

    return load


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a SeqrecError naming the address (in use, not allowed, unknown host)."""
    if not 0 <= port <= 65535:
        raise SeqrecError(f"--port {port}: expected a port number in 0..65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SeqrecError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # a restart need not wait for TIME_WAIT
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = {errno.EADDRINUSE: "already in use (another server on it? choose another --port)",
                  errno.EACCES: "not allowed (ports below 1024 need privileges)",
                  errno.EADDRNOTAVAIL: "not an address of this machine"}.get(e.errno, e.strerror)
        raise SeqrecError(f"--host {host} --port {port}: cannot listen there: {reason}") from None
    sock.set_inheritable(True)          # uvicorn's worker processes serve on it
    return sock


class _JsonErrors:
    """Mixed into uvicorn's HTTP protocol classes: what the parser refuses gets a JSON 400, and a connection whose
    request line and headers stop arriving for the keep-alive timeout is closed, also before its first request
    (uvicorn arms that timer only between requests)."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)         # uvicorn's cancels the timer
        if self._awaiting_headers() and not self.transport.is_closing():
            self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "invalid HTTP request (malformed request line, header or Content-Length, or "
                                    "headers too large)"}).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()


class JsonErrorsH11Protocol(_JsonErrors, H11Protocol):
    """h11 itself refuses a request line + headers over uvicorn's h11_max_incomplete_event_size (16 KB)."""

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE


if HttpToolsProtocol is not None:
    class JsonErrorsHttpToolsProtocol(_JsonErrors, HttpToolsProtocol):
        """httptools sets no limit on the headers' size: a request whose headers go on past MAX_HEADER_BYTES
        (counted from the data after the chunk that began the request) is refused here."""

        _in_headers = False
        _header_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._header_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

        def _awaiting_headers(self) -> bool:
            return self._in_headers

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._in_headers and self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self.send_400_response("headers too large")

    HTTP_PROTOCOL = JsonErrorsHttpToolsProtocol
    """httptools parses requests several times faster than h11, where it is installed."""
else:
    HTTP_PROTOCOL = JsonErrorsH11Protocol


def uvicorn_config(app, sock: socket.socket, workers: int = 1, access_log: bool = False, keep_alive_s: float = 5,
                   **extra) -> uvicorn.Config:
    host, port = sock.getsockname()[:2]
    settings = dict(workers=workers, http=HTTP_PROTOCOL, access_log=access_log, timeout_keep_alive=keep_alive_s,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on", ws="none", server_header=False,
                    log_level="info")
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # a worker starting on a busy 2-core machine (imports, torch) can take longer than uvicorn's 5 s to
        # answer the supervisor's first ping, which then kills and restarts it
        settings["timeout_worker_healthcheck"] = WORKER_STARTUP_S
    return uvicorn.Config(app, host=host, port=port, **{**settings, **extra})


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 8080, workers: int = 1, backend: str = "torch",
          access_log: bool = False, keep_alive_s: float = 5, announce: Callable[[str], None] | None = None,
          **app_settings) -> None:
    """Serve `checkpoint` until stopped (Ctrl-C, SIGTERM). app_settings: create_app's keyword arguments
    (max_batch, max_wait_ms, max_body_bytes, max_k, read_timeout_s, load_wait_s). Bad settings, an unreadable
    checkpoint and an address that cannot be listened on are SeqrecErrors raised before anything is served."""
    from seqrec.serve.app import ENV_SETTINGS, check_settings, create_app

    if not isinstance(workers, int) or workers < 1:
        raise SeqrecError(f"workers (--workers): expected a positive integer, got {workers}")
    if not keep_alive_s > 0:
        raise SeqrecError(f"keep_alive_s (--keep-alive-s): expected a positive number of seconds, got {keep_alive_s}")
    check_settings(**app_settings)
    sock = bind(host, port)                         # a port in use fails at once, before the model loads
    try:
        recommender = loader(checkpoint, backend)()     # so does an unreadable checkpoint, before serving
    except BaseException:
        sock.close()
        raise
    url = f"http://{host}:{sock.getsockname()[1]}"
    if announce:
        announce(f"serving {checkpoint} ({backend}, {workers} worker{'s' * (workers > 1)}) on {url} "
                 f"(docs {url}/docs; Ctrl-C to stop)")
    logging.getLogger("seqrec.serve").setLevel(logging.INFO)
    if workers == 1:
        config = uvicorn_config(create_app(recommender, **app_settings), sock, 1, access_log, keep_alive_s)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:   # Ctrl-C: uvicorn has shut down gracefully, then raised it again
            pass
        return
    del recommender                 # each worker loads its own
    with tempfile.TemporaryDirectory(prefix="seqrec-metrics-") as metrics_dir:
        os.environ[ENV_SETTINGS] = json.dumps({"checkpoint": str(Path(checkpoint).resolve()), "backend": backend,
                                               **app_settings})
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        config = uvicorn_config("seqrec.serve.app:app_from_env", sock, workers, access_log, keep_alive_s,
                                factory=True)
        _multiprocess(config, sock).run()


def _multiprocess(config: uvicorn.Config, sock: socket.socket):
    """uvicorn's supervisor of `config.workers` worker processes serving on `sock` (its constructor took the
    worker's target function until uvicorn 0.3x; later versions find it themselves)."""
    from uvicorn.supervisors import Multiprocess
    if "target" in inspect.signature(Multiprocess).parameters:
        return Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])
    return Multiprocess(config, sockets=[sock])
