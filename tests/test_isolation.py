"""standalone/ and convert/ never load transformers or qwen_tts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
import q3tts.standalone, q3tts.convert
import q3tts.standalone.model, q3tts.standalone.mel, q3tts.standalone.speech_encoder, q3tts.standalone.audio, q3tts.convert.layout, q3tts.convert.convert
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
                if s.startswith(("import ", "from ")) and any(w in s.split()[1].split(".")[0] for w in ("transformers", "qwen_tts")):
                    offenders.append(f"{path.name}: {s}")
    assert not offenders, offenders
