"""The verify-parity console: upstream's warnings and banners stay off it (counted in the report),
progress shows per case group, the verdict and report paths come last; --verbose lets upstream through."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

# What upstream prints in a run: transformers' per-generate warning, qwen_tts' flash-attn banner,
# the sox package's banner and the shell's complaint when sox probes for its binary.
UPSTREAM_CHATTER = re.compile(r"pad_token_id|flash-attn|SoX|sox|generation flags|UserWarning", re.IGNORECASE)
PROGRESS = re.compile(r"^\[ ?\d+:\d\d\] \S+ / fp32: forward \d+ ok \d+s; generation \d+ ok \d+s; .*PASS \(\d+ cases\)$")


def _verify(src, report, *extra):
    cmd = [sys.executable, "-m", "q3tts.verify.cli", str(src), "--dtype", "fp32", "--seeds", "0", "--frames", "2"]
    return subprocess.run(
        [*cmd, "--no-sensitivity", "--report-dir", str(report), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.reference
def test_default_console_is_quiet_and_shows_progress(checkpoints, tmp_path):
    r = _verify(checkpoints["custom_voice"][0], tmp_path / "r")
    assert r.returncode == 0, r.stdout + r.stderr
    console = (r.stdout + r.stderr).splitlines()
    assert not [line for line in console if UPSTREAM_CHATTER.search(line)], r.stdout + r.stderr
    assert sum(bool(PROGRESS.match(line)) for line in console) == 1, r.stdout
    assert r.stdout.strip().splitlines()[-2].startswith("verdict: PASS")
    assert r.stdout.strip().splitlines()[-1].startswith("report: ")
    assert len(console) <= 10
    # Kept off the console, not lost: every line once in the report, with its count.
    kept = json.loads((tmp_path / "r" / "parity.json").read_text())["upstream_output"]
    pad = [d for d in kept["distinct"] if "pad_token_id" in d["text"]]
    assert pad and sum(d["count"] for d in pad) > 1, kept
    assert len({d["text"] for d in kept["distinct"]}) == len(kept["distinct"])
    assert kept["lines"] == sum(d["count"] for d in kept["distinct"])
    assert "## Upstream output kept off the console" in (tmp_path / "r" / "parity.md").read_text()


@pytest.mark.reference
def test_verbose_lets_upstream_through(checkpoints, tmp_path):
    # The forward cases alone: upstream's import banner (flash-attn) is enough to see it let through.
    r = _verify(checkpoints["custom_voice"][0], tmp_path / "r", "--verbose", "--no-generation")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "flash-attn" in r.stdout + r.stderr
    assert "upstream_output" not in json.loads((tmp_path / "r" / "parity.json").read_text())
    assert r.stdout.strip().splitlines()[-1].startswith("report: ")


def test_the_verdict_line_names_a_failing_training_section():
    """All cases passing and the training section failing: the verdict is FAIL and says why."""
    from q3tts.verify.report.parity import build_report, verdict_line

    runs = [{"cases": [{"case": "a", "passed": True}, {"case": "b", "passed": True}]}]
    failing = build_report(runs, [0], 4, training={"passed": False, "checks": {}})
    assert verdict_line(failing) == "verdict: FAIL (2/2 cases pass; training FAILS)"
    passing = build_report(runs, [0], 4, training={"passed": True, "checks": {}})
    assert verdict_line(passing) == "verdict: PASS (2/2 cases pass; training passes)"
    assert verdict_line(build_report(runs, [0], 4)) == "verdict: PASS (2/2 cases pass)"


@pytest.mark.parametrize("mode", ["fast", "mixed", "engine", "self_test"])
@pytest.mark.parametrize("verbose", [False, True])
def test_every_mode_keeps_upstream_off_the_console(mode, verbose, tmp_path, monkeypatch, capfd):
    """The modes without their own accounting run captured as a whole: a stand-in for the mode
    prints as upstream does (Python's stdout, and a native write to fd 2 as sox's probe makes) and
    writes one line of ours; only ours reaches the console, upstream's are counted in
    upstream-output.json. With --verbose everything goes through and nothing is counted. (Warnings
    and logging go through the same capture; the default mode's test above sees them, here pytest
    would swallow them first.)"""
    import os

    from q3tts.verify import cli
    from q3tts.verify.report.console import echo

    def stand_in(o):
        print("Setting `pad_token_id` to `eos_token_id`:2150 for open-end generation.")
        os.write(2, b"sh: 1: sox: not found\n")
        echo("our line")
        return True

    monkeypatch.setitem(cli.MODES, mode, stand_in)
    monkeypatch.setattr(cli, "pick_mode", lambda o: mode)
    r = CliRunner().invoke(cli.main, ["--report-dir", str(tmp_path)] + (["--verbose"] if verbose else []))
    native = capfd.readouterr()
    assert r.exit_code == 0, r.output
    console = r.output + native.out + native.err
    assert "our line" in r.output
    kept = tmp_path / "upstream-output.json"
    if verbose:
        assert "pad_token_id" in console and not kept.exists()
        return
    assert not [line for line in console.splitlines() if UPSTREAM_CHATTER.search(line)], console
    assert "upstream output kept off the console: 2 lines" in r.output
    texts = " ".join(d["text"] for d in json.loads(kept.read_text())["distinct"])
    assert "pad_token_id" in texts and "sox: not found" in texts, texts
