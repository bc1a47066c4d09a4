"""The upstream-release gate command runs end to end on the pinned qwen-tts version."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from q3tts.verify.gate import reference_requirements


def test_reference_requirements_leave_the_release_under_test_open():
    reqs = reference_requirements()
    assert any(r.startswith("torch==") for r in reqs)
    assert not any(r.lower().startswith(("qwen-tts", "transformers", "pytest")) for r in reqs)


@pytest.mark.reference
def test_gate_on_the_pinned_release(tmp_path):
    report = tmp_path / "gate-report"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "q3tts.verify.cli",
            "--against-upstream",
            "0.1.1",
            "--reuse-torch",
            "--dtype",
            "fp32",
            "--seeds",
            "0",
            "--frames",
            "8",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    gate = json.loads((report / "gate.json").read_text())
    assert gate["qwen-tts"] == "0.1.1" and gate["transformers"] == "4.57.3" and gate["passed"]
    parity = json.loads((report / "parity.json").read_text())
    assert parity["verdict"] == "PASS" and parity["versions"]["qwen-tts"] == "0.1.1"
    assert (report / "parity.md").read_text().startswith("# Parity: PASS")
