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
# Reference and fast tests side by side; the goldens' every-weight sweep (7 s, checked in the main
# run) is left out: the subset proves the blocker, not the goldens.
SUBSET = [
    "tests/test_goldens.py", "tests/test_isolation.py", "tests/test_loading_errors.py",
    "--deselect", "tests/test_goldens.py::test_every_weight_matters_to_the_forward_and_audio_goldens",
]  # fmt: skip


@pytest.mark.reference
def test_a_fast_tier_subset_runs_under_the_blocker_and_loads_no_reference_module(tmp_path):
    report = tmp_path / "tier.json"
    env = dict(os.environ, Q3TTS_TIER_REPORT=str(report))
    env.pop("Q3TTS_FAST_TIER", None)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--fast", "-q", "-n", "0", "-p", "no:cacheprovider", *SUBSET],
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


PLANTED_CONFTEST = """
import importlib.util

_spec = importlib.util.spec_from_file_location("q3tts_tests_conftest", {path!r})
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
globals().update({{k: v for k, v in vars(_conftest).items() if k.startswith("pytest_")}})
"""

PLANTED_TESTS = """
import sys, types


def test_loads_a_reference_module_behind_the_blockers_back():
    sys.modules["librosa"] = types.ModuleType("librosa")


def test_tries_an_import_the_blocker_refuses():
    try:
        import qwen_tts  # noqa: F401
    except ImportError:
        pass


def test_plain():
    assert True
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_reference_module_loaded_in_a_worker_fails_the_fast_tier(tmp_path, workers):
    """Planted: one test slips a reference module in, another tries an import the blocker refuses.
    Whether the tests ran in this process or in xdist workers, the session fails and the report
    names both (the controller gathers what each worker saw)."""
    (tmp_path / "conftest.py").write_text(PLANTED_CONFTEST.format(path=str(Path(__file__).with_name("conftest.py"))))
    (tmp_path / "test_planted.py").write_text(PLANTED_TESTS)
    report = tmp_path / "tier.json"
    env = dict(os.environ, Q3TTS_TIER_REPORT=str(report))
    env.pop("Q3TTS_FAST_TIER", None)
    # The planted tests need neither hypothesis's nor anyio's plugin: without them each of the (up to
    # three) pytest processes starts in a fraction of a second instead of seconds.
    plugins_off = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--fast", "-q", "-n", workers, *plugins_off, "test_planted.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1 and "3 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert "the reference stack was loaded: ['librosa']" in r.stderr, r.stderr[-3000:]
    seen = json.loads(report.read_text())
    assert seen["loaded"] == ["librosa"] and seen["blocked_attempts"] == ["qwen_tts"], seen
