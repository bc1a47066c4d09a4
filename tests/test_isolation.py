"""standalone/ and convert/ never load transformers or qwen_tts; standalone/ loads nothing from convert/ or verify/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
import q3tts.standalone, q3tts.convert
import q3tts.standalone.model, q3tts.standalone.mel, q3tts.standalone.speech_encoder, q3tts.standalone.audio, q3tts.standalone.layout, q3tts.standalone.conversion
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'qwen_tts', 'librosa'))
print(','.join(bad))
sys.exit(1 if bad else 0)
"""


def test_runtime_and_converter_import_no_upstream_modules():
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert r.returncode == 0, f"loaded: {r.stdout.strip()} {r.stderr[-2000:]}"


def test_no_upstream_import_statements_in_runtime_sources():
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for pkg in ("standalone", "convert"):
        for path in (root / pkg).rglob("*.py"):
            for line in path.read_text().splitlines():
                s = line.strip()
                if s.startswith(("import ", "from ")) and any(
                    w in s.split()[1].split(".")[0] for w in ("transformers", "qwen_tts")
                ):
                    offenders.append(f"{path.name}: {s}")
    assert not offenders, offenders


# --- standalone/ stands alone: nothing from convert/ or verify/ --------------------------------

RUNTIME_ONLY = """
import pkgutil, sys
import q3tts.standalone
for info in pkgutil.walk_packages(q3tts.standalone.__path__, "q3tts.standalone."):
    if info.name != "q3tts.standalone.cli":  # attaches `q3tts convert/verify` through entry points
        __import__(info.name)
print(sorted(m for m in sys.modules if m.startswith("q3tts.standalone")))
bad = sorted(m for m in sys.modules if m.startswith(("q3tts.convert", "q3tts.verify")))
print(",".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
"""


def test_runtime_modules_load_neither_converter_nor_verifier():
    r = subprocess.run([sys.executable, "-c", RUNTIME_ONLY], capture_output=True, text=True)
    assert r.returncode == 0, f"loaded: {r.stderr[-2000:]}"
    assert "q3tts.standalone.model" in r.stdout and "q3tts.standalone.voices" in r.stdout  # the walk reached them


def _imported_names(path: Path) -> list[str]:
    """Absolute names of every import in a standalone/ source file, relative ones resolved."""
    package = ["q3tts", "standalone"]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.append(node.value)  # importlib.import_module("q3tts.verify...") and the like
    return names


def test_no_converter_or_verifier_imports_in_runtime_sources():
    root = Path(__file__).resolve().parents[1] / "standalone"
    offenders = [
        f"{p.name}: {name}"
        for p in sorted(root.rglob("*.py"))
        for name in _imported_names(p)
        if name.startswith(("q3tts.convert", "q3tts.verify"))
    ]
    assert not offenders, offenders


def test_the_source_scan_sees_relative_and_absolute_imports(tmp_path):
    """The scan above is not vacuous: both import styles resolve to the forbidden packages."""
    src = tmp_path / "bad.py"
    src.write_text("from ..verify import goldens\nimport q3tts.standalone.layout\nfrom . import model\n")
    names = _imported_names(src)
    assert "q3tts.verify.goldens" in names and "q3tts.standalone.layout" in names and "q3tts.standalone.model" in names
