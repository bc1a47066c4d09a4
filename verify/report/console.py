"""The verify-parity console: upstream's chatter off the screen (counted in the report), progress on it.

Upstream prints while it is imported, built and run: ``Setting pad_token_id to eos_token_id...``
once per ``generate`` call (about 180 times in a default run), the flash-attn and SoX banners,
library warnings. ``UpstreamOutput.captured()`` routes everything written to stdout/stderr (print,
``warnings``, ``logging`` stream handlers) into a counter while upstream code runs; the report then
lists each distinct line once with its count. Our own console lines go through ``Progress``, which
holds the real stdout from before any capture. ``--verbose`` skips the capture altogether.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any

# The stdout of every open capture, outermost first: our own console lines go to the first, which
# is the terminal (or a test's runner) from before any capture.
_REAL_STDOUT: list = []


def console_stream():
    """Where our own console lines go: the stdout from before any capture, else sys.stdout."""
    return _REAL_STDOUT[0] if _REAL_STDOUT else sys.stdout


def echo(text: str = "") -> None:
    """One console line of ours, past any capture of upstream's output."""
    stream = console_stream()
    stream.write(f"{text}\n")
    stream.flush()


class _Sink(io.TextIOBase):
    """A text stream that feeds complete lines to an UpstreamOutput."""

    def __init__(self, owner: UpstreamOutput):
        self.owner = owner
        self.partial = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        *lines, self.partial = (self.partial + s).split("\n")
        for line in lines:
            self.owner.add(line)
        return len(s)

    def flush(self) -> None:  # lines are counted as they complete
        pass


class UpstreamOutput:
    """Every line upstream wrote while captured, counted (blank lines dropped)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []

    def add(self, line: str) -> None:
        line = line.rstrip()
        if not line.strip():
            return
        if line not in self.counts:
            self.order.append(line)
        self.counts[line] += 1

    @contextmanager
    def captured(self):
        sink = _Sink(self)
        real = (sys.stdout, sys.stderr)
        # logging.StreamHandler keeps the stream it was created with (transformers makes its own
        # handler on first use), so swapping sys.stderr alone would not catch its warnings.
        swapped = [h for h in _stream_handlers() if h.stream in (*real, sys.__stdout__, sys.__stderr__)]
        originals = [h.stream for h in swapped]
        for h in swapped:
            h.setStream(sink)
        sys.stdout = sys.stderr = sink
        _REAL_STDOUT.append(real[0])
        fd2 = _redirect_fd2()
        try:
            yield self
        finally:
            _REAL_STDOUT.pop()
            sys.stdout, sys.stderr = real
            for line in _restore_fd2(fd2):
                self.add(line)
            for h, s in zip(swapped, originals):
                h.setStream(s)
            # Handlers created during the capture hold the sink; later output must reach the terminal.
            for h in _stream_handlers():
                if isinstance(h.stream, _Sink):
                    h.setStream(real[1])
            if sink.partial:
                self.add(sink.partial)

    def summary(self) -> dict[str, Any]:
        """{"lines": total, "distinct": [{"text", "count"}, ...]} in order of first appearance."""
        return {
            "lines": sum(self.counts.values()),
            "distinct": [{"text": t, "count": self.counts[t]} for t in self.order],
        }


def _redirect_fd2():
    """Point file descriptor 2 at a temporary file: what subprocesses and native code write there
    (``sox`` probed through /bin/sh prints "sox: not found") bypasses sys.stderr."""
    try:
        sys.__stderr__.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):
        return None
    tmp = tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 2)
    return saved, tmp


def _restore_fd2(state) -> list[str]:
    if state is None:
        return []
    saved, tmp = state
    os.dup2(saved, 2)
    os.close(saved)
    tmp.seek(0)
    text = tmp.read().decode("utf-8", errors="replace")
    tmp.close()
    return text.splitlines()


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


@contextmanager
def maybe_captured(output: UpstreamOutput | None):
    """Capture into ``output``; with None (--verbose) let everything through."""
    if output is None:
        yield None
    else:
        with output.captured():
            yield output


class Progress:
    """Progress lines on the real stdout with the elapsed time since the run started.

    One line per checkpoint and dtype; each case group is appended to it as it finishes. In
    verbose mode (upstream output interleaved) every group gets a line of its own.
    """

    def __init__(self, inline: bool = True, stream=None):
        self.stream = stream or console_stream()
        self.inline = inline
        self.t0 = time.perf_counter()
        self.open_line = False

    def elapsed(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"[{s // 60:2d}:{s % 60:02d}]"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def line(self, text: str) -> None:
        self.end()
        self._write(f"{self.elapsed()} {text}\n")

    def start(self, label: str) -> None:
        self.end()
        self.label = label
        self._write(f"{self.elapsed()} {label}:" if self.inline else f"{self.elapsed()} {label}: started\n")

    def group(self, text: str) -> None:
        if self.inline:
            self._write(f" {text};")
            self.open_line = True
        else:
            self._write(f"{self.elapsed()} {self.label}: {text}\n")

    def finish(self, verdict: str) -> None:
        if self.inline:
            self._write(f" {verdict}\n")
            self.open_line = False
        else:
            self._write(f"{self.elapsed()} {self.label}: {verdict}\n")

    def end(self) -> None:
        if self.open_line:
            self._write("\n")
            self.open_line = False


def render_upstream_output(summary: dict[str, Any] | None, limit: int = 40) -> list[str]:
    """Markdown lines for parity.md: what upstream printed, each distinct line once, counted."""
    if not summary or not summary["lines"]:
        return []
    rows = summary["distinct"]
    lines = [
        "",
        "## Upstream output kept off the console",
        "",
        f"{summary['lines']} lines ({len(rows)} distinct) that upstream printed or logged during the run; "
        "`--verbose` shows them as they come.",
        "",
        "| count | line |",
        "|---|---|",
    ]
    for r in rows[:limit]:
        text = r["text"].strip().replace("|", "\\|").replace("`", "'")
        lines.append(f"| {r['count']} | {text[:200]} |")
    if len(rows) > limit:
        lines.append(f"| ... | {len(rows) - limit} more distinct lines in parity.json |")
    return lines
