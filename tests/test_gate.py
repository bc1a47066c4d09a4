"""The upstream gate: its targets, its outcome classification, and a run on the pinned release."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from q3tts.verify.gate.outcome import EXIT_CODES, classify, console_lines, write_error
from q3tts.verify.gate.release import parse_target, reference_requirements

GOLDEN = Path(__file__).parent / "golden"


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
            "2",  # the gate's wiring and outcome; the gate matrix runs every case at 8 frames
            "--no-streaming",  # passed to the inner run (so is --no-sensitivity): the default run's own tests cover both
            "--no-sensitivity",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    gate = json.loads((report / "gate.json").read_text())
    assert gate["outcome"] == "pass" and gate["passed"] and gate["distribution"] == "qwen-tts"
    assert gate["installed"]["qwen-tts"] == "0.1.1" and gate["installed"]["transformers"] == "4.57.3"
    parity = json.loads((report / "parity.json").read_text())
    assert parity["verdict"] == "PASS" and parity["versions"]["qwen-tts"] == "0.1.1"
    assert (report / "parity.md").read_text().startswith("# Parity: PASS")
    # the narrowing flags reached the inner run
    kinds = {c["kind"] for run in parity["runs"] for c in run["cases"]}
    assert "streaming" not in kinds and "forward" in kinds and "generation" in kinds, kinds
    assert not any(run.get("knob_sensitivity") for run in parity["runs"]) and not parity.get("knob_sensitivity")


# --------------------------------------------------------------------------------------------
# The three axes and the outcome classification (no upstream needed: planted inner-run results)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0.1.1", ("qwen-tts", "0.1.1")),
        ("latest", ("qwen-tts", "latest")),
        ("qwen-tts-hf==0.1.1.post1", ("qwen-tts-hf", "0.1.1.post1")),
        ("qwen_tts_hf==latest", ("qwen-tts-hf", "latest")),
        ("qwen-tts-hf", ("qwen-tts-hf", "latest")),
    ],
)
def test_targets_name_distribution_and_version(spec, expected):
    assert parse_target(spec) == expected


@pytest.mark.parametrize("spec", ["torch==2.9.1", "qwen-tts==not a version"])
def test_bad_targets_are_refused_naming_the_option(spec):
    with pytest.raises(click.BadParameter) as e:
        parse_target(spec)
    assert e.value.param_hint == "--against-upstream"


def _fake_upstream(tmp_path, source: str):
    """A module that lives where an installed upstream does (site-packages/qwen_tts/...)."""
    pkg = tmp_path / "site-packages" / "qwen_tts"
    pkg.mkdir(parents=True)
    path = pkg / "fake_loader.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fake_qwen_tts_loader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_exception_from_upstream_code_is_upstream_broken(tmp_path):
    fake = _fake_upstream(
        tmp_path,
        "def load(config):\n    return helper(config)\n\n\ndef helper(config):\n    return config.rope_theta\n",
    )
    try:
        fake.load(object())
    except AttributeError as e:
        write_error(tmp_path / "r", e, "load")
    out = classify(tmp_path / "r", child_rc=2)
    assert out["outcome"] == "upstream-broken"
    frame = out["error"]["upstream_frame"]
    # the innermost upstream frame: the line that raised, not the entry point
    assert (frame["file"], frame["line"], frame["function"]) == ("qwen_tts/fake_loader.py", 6, "helper")
    assert out["error"]["stage"] == "load" and "rope_theta" in out["detail"]
    text = "\n".join(console_lines(out))
    assert "upstream frame: qwen_tts/fake_loader.py:6 in helper" in text
    assert EXIT_CODES[out["outcome"]] not in (EXIT_CODES["pass"], EXIT_CODES["parity-fail"])


def test_an_exception_of_our_own_is_not_blamed_on_upstream(tmp_path):
    try:
        {}["missing"]
    except KeyError as e:
        write_error(tmp_path / "r", e, "run")
    out = classify(tmp_path / "r", child_rc=2)
    assert out["outcome"] == "error" and out["error"]["upstream_frame"] is None


def _case(name, passed, kind="forward", layer=None, div=None):
    metrics = {"first_divergence": div} if kind == "generation" else {"max_abs": 1.0}
    return {
        "case": name,
        "component": name.split(".")[0],
        "kind": kind,
        "dtype": "fp32",
        "passed": passed,
        "metrics": metrics,
        "first_bad_layer": layer,
        "note": "",
    }


def _write_parity(report_dir, cases):
    from q3tts.verify.report.parity import build_report

    run = {"checkpoint": "tiny-base", "source": "fixture", "dtype": "fp32", "config": {}, "passed": False}
    run.update(seconds_upstream=1.0, seconds_standalone=1.0, cases=cases)
    report = build_report([run], [0], 8)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "parity.json").write_text(json.dumps(report))


def test_a_parity_break_names_cases_and_where_they_diverge(tmp_path):
    _write_parity(
        tmp_path / "r",
        [
            _case("talker.prefill.hidden", False, layer="talker.layers.1"),
            _case("generation.plain.streaming.greedy", False, "generation", div={"item": 0, "frame": 3, "group": 2}),
            _case("text_projection", True),
        ],
    )
    out = classify(tmp_path / "r", child_rc=1)
    assert out["outcome"] == "parity-fail" and out["detail"] == "2 of 3 cases fail"
    assert [f["case"] for f in out["failures"]] == ["talker.prefill.hidden", "generation.plain.streaming.greedy"]
    text = "\n".join(console_lines(out))
    assert "talker.prefill.hidden: first bad layer talker.layers.1" in text
    assert "generation.plain.streaming.greedy: first diverging frame 3 (item 0, group 2)" in text
    assert EXIT_CODES["parity-fail"] == 1


def test_a_clean_report_passes(tmp_path):
    _write_parity(tmp_path / "r", [_case("text_projection", True)])
    assert classify(tmp_path / "r", child_rc=0)["outcome"] == "pass"


def test_install_failure_is_its_own_outcome_and_exit_code(tmp_path, monkeypatch):
    # A version no index has; offline, so the failure is pip's and the test needs no network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    report = tmp_path / "gate"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "q3tts.verify.cli",
            "--against-upstream",
            "qwen-tts-hf==0.0.0.dev999",
            "--transformers",
            "5.24.0",
            "--reuse-torch",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == EXIT_CODES["install-fail"] == 4, r.stdout + r.stderr
    gate = json.loads((report / "gate.json").read_text())
    assert gate["outcome"] == "install-fail" and not gate["passed"]
    assert gate["distribution"] == "qwen-tts-hf" and gate["requested"]["transformers"] == "5.24.0"
    assert "qwen-tts-hf==0.0.0.dev999" in gate["detail"]
    assert "outcome: install-fail" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("report: ")


@pytest.mark.reference
def test_fixture_factory_falls_back_to_the_recorded_specs_with_the_same_bytes(tmp_path, monkeypatch):
    """When upstream's classes cannot build the tiny codec (as transformers 5.24 with qwen-tts-hf),
    the checkpoint is written from the recorded specs: the same files, so the loader decides."""
    from safetensors.torch import load_file

    from q3tts.verify.fixtures import writer as fixtures
    from q3tts.verify.gate.outcome import SPECS_ENV, write_fixture

    reference, how = write_fixture(tmp_path / "normal", "base", seed=10)
    assert how["written_from"] == "upstream classes"
    fake = _fake_upstream(tmp_path, "def build(config):\n    raise AttributeError('no attribute rope_theta')\n")
    monkeypatch.setattr(fixtures, "build_upstream_codec", fake.build)
    monkeypatch.setenv(SPECS_ENV, str(GOLDEN / "fixture_tensors.json"))
    written, how = write_fixture(tmp_path / "fallback", "base", seed=10)
    assert how["written_from"] == "recorded tensor specs"
    assert "rope_theta" in how["note"] and "qwen_tts/fake_loader.py:2" in how["note"]
    for part in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        a, b = load_file(str(reference / part)), load_file(str(written / part))
        assert list(a) == list(b) and all(a[k].equal(b[k]) for k in a), part
    # Without recorded specs there is nothing to fall back on: the factory's error stands.
    monkeypatch.setenv(SPECS_ENV, str(tmp_path / "missing.json"))
    monkeypatch.setattr("q3tts.verify.gate.outcome._SOURCE_SPECS", tmp_path / "missing.json")
    with pytest.raises(AttributeError, match="rope_theta"):
        write_fixture(tmp_path / "none", "base", seed=10)
