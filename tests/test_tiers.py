"""The fast tier stays free of the reference stack.

In the fast tier itself (`pytest --fast`) conftest blocks imports of transformers, qwen_tts,
torchaudio and librosa, and fails the session if one got loaded anyway. In the reference
environment, where they are installed, the subprocess test below runs a fast-tier subset under that
blocker and reads back what it saw, so the full suite also proves the split.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ["tests/test_goldens.py", "tests/test_isolation.py", "tests/test_loading_errors.py"]


@pytest.mark.reference
def test_a_fast_tier_subset_runs_under_the_blocker_and_loads_no_reference_module(tmp_path):
    report = tmp_path / "tier.json"
    env = dict(os.environ, Q3TTS_TIER_REPORT=str(report))
    env.pop("Q3TTS_FAST_TIER", None)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--fast", "-q", "-p", "no:cacheprovider", *SUBSET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    seen = json.loads(report.read_text())
    # Installed here, so only the blocker keeps them out: it must have been in place, and it must block.
    assert importlib.util.find_spec("qwen_tts") is not None and importlib.util.find_spec("transformers") is not None
    assert seen["blocker_installed"] and seen["blocks_qwen_tts"], seen
    assert seen["loaded"] == [] and seen["blocked_attempts"] == [], seen
    assert seen["failed"] == 0 and seen["passed"] >= 60, seen  # the goldens alone are over 60 tests
    assert "deselected" in r.stdout  # the subset holds reference tests too, and --fast left them out


def test_this_session_has_not_loaded_the_reference_stack_under_fast(request):
    """At this point of a `--fast` run nothing loaded the reference stack (conftest checks again
    at the end of the session), and the blocker refuses it."""
    if not (request.config.getoption("--fast") or os.environ.get("Q3TTS_FAST_TIER") == "1"):
        pytest.skip("checks the fast tier only; run `pytest --fast`")
    assert not [m for m in sys.modules if m.split(".")[0] in ("transformers", "qwen_tts", "torchaudio", "librosa")]
    for name in ("qwen_tts", "transformers"):
        with pytest.raises(ImportError, match="blocked in the fast test tier"):
            importlib.import_module(name)
