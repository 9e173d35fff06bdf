"""A dependency-free progress bar: epoch, batches, running loss terms and speed on one line (TTY), or one line
per epoch when stderr is not a terminal (CI logs)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, epoch: int, step: int, total: int, terms: dict[str, float], examples: int, t0: float) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and step < total:
            return
        self._last = now
        rate = examples / max(now - t0, 1e-9)
        width = 20
        fill = int(width * step / max(total, 1))
        bar = "#" * fill + "-" * (width - fill)
        loss = " ".join(f"{k} {v:.4f}" for k, v in terms.items())
        self.stream.write(f"\repoch {epoch} [{bar}] {step}/{total} {loss} | {rate:,.0f} ex/s ")
        self.stream.flush()

    def end_epoch(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self.stream.flush()
