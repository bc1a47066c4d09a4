"""JSON parsed with a nesting limit: every JSON file a checkpoint brings (configs, index files,
manifests, safetensors headers) is read through here, so a deeply nested file is one
JSONDecodeError naming where the nesting got too deep, not a RecursionError from the parser."""

from __future__ import annotations

import json
import re

MAX_DEPTH = 64  # the deepest file we write or read is 4 levels deep
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a string (skipped) or a bracket


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise json.JSONDecodeError when ``text`` nests arrays/objects deeper than ``max_depth``."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise json.JSONDecodeError(f"nested deeper than {max_depth} levels", text, m.start())
        elif token in "]}":
            depth -= 1


def load_json_text(text: str | bytes, max_depth: int = MAX_DEPTH):
    """``json.loads`` with the nesting limit; errors are json.JSONDecodeError, which say where."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    check_depth(text, max_depth)
    return json.loads(text)
