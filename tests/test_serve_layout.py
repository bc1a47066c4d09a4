"""serve/ stands on the runtime alone: no import of the reference stack (transformers, qwen_tts)
or of the converter and verifier, checked in the sources and in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVE = Path(__file__).resolve().parents[1] / "serve"
FORBIDDEN = ("transformers", "qwen_tts", "torchaudio", "librosa", "q3tts.convert", "q3tts.verify")


def imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
    return names


def forbidden_imports(paths) -> list[str]:
    return [
        f"{p.name}: {n}" for p in paths for n in imported_names(p) if n == "" or n.startswith(FORBIDDEN) or n == "q3tts"
    ]


def test_serve_sources_import_neither_the_reference_stack_nor_the_verifier():
    assert sorted(SERVE.glob("*.py")) and forbidden_imports(sorted(SERVE.glob("*.py"))) == []


def test_the_scan_sees_a_planted_import(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\nfrom transformers import AutoModel\nfrom q3tts.verify import x\n")
    assert forbidden_imports([tmp_path / "bad.py"]) == ["bad.py: transformers", "bad.py: q3tts.verify"]


def test_importing_the_server_loads_no_reference_module():
    code = (
        "import sys, q3tts.serve.app, q3tts.serve.cli, q3tts.serve.loadtest;"
        f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}));"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"loaded: {r.stdout} {r.stderr[-2000:]}"
