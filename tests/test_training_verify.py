"""verify-parity --training (the training section of parity.json / parity.md) and the training
faults in --self-test: each section present when asked, each planted training fault reported."""

from __future__ import annotations

import contextlib
import json

import pytest
from click.testing import CliRunner

import q3tts.verify.faults.training as training_faults
from q3tts.verify.cli import main as verify_cli
from q3tts.verify.faults.training import TRAINING_FAULTS, TrainingFault

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


def _run(*args):
    r = CliRunner().invoke(verify_cli, [str(a) for a in args])
    return r.exit_code, r.output


def _verify(checkpoints, report_dir, *extra):
    """The smallest verify-parity run: one tiny checkpoint, fp32, forwards only."""
    up = checkpoints["voice_design"][0]
    return _run(up, "--dtype", "fp32", "--no-generation", "--report-dir", report_dir, *extra)


def _report(report_dir):
    return json.loads((report_dir / "parity.json").read_text()), (report_dir / "parity.md").read_text()


def test_training_section_is_reported(checkpoints, tmp_path):
    code, out = _verify(checkpoints, tmp_path / "r", "--training")
    assert code == 0, out
    report, md = _report(tmp_path / "r")
    assert report["verdict"] == "PASS"
    sec = report["training"]
    assert sec["passed"] and all(sec["checks"].values()), sec["checks"]
    (parity,) = sec["parity"]
    assert parity["dtype"] == "fp32" and parity["recipe"] == "upstream" and parity["passed"]
    cases = {c["case"] for c in parity["comparisons"]}
    for name in ("loss", "talker_loss", "code_predictor_loss", "talker_logits", "code_predictor_logits"):
        assert f"train.{name}" in cases
    groups = {c.removeprefix("grad_group.") for c in cases if c.startswith("grad_group.")}
    assert {"talker.layers", "code_predictor.layers", "talker.embeddings_head_norm"} <= groups
    assert sum(c.startswith("grad.") for c in cases) > 20  # every parameter, not a sample
    by_recipe = {c["recipe"]: c for c in sec["consistency"]}
    assert by_recipe["aligned"]["passed"] and not by_recipe["upstream"]["passed"]
    assert by_recipe["upstream"]["talker_first_bad"] is not None  # where it fails is stated
    # parity.md: the section, its tables and the numbers a reader needs
    assert "## Training: PASS" in md
    assert "### Upstream-recipe parity" in md and "### Teacher-forcing consistency with generation" in md
    assert "| fp32 | PASS |" in md and "| fp32 | talker.layers |" in md
    assert "| aligned | consistent | consistent |" in md
    assert "| upstream | inconsistent | inconsistent |" in md and "group 0 from frame" in md


def test_no_training_section_unless_asked(checkpoints, tmp_path):
    code, out = _verify(checkpoints, tmp_path / "r")
    assert code == 0, out
    report, md = _report(tmp_path / "r")
    assert "training" not in report and "## Training" not in md


def test_planted_training_fault_fails_the_report_and_is_named(checkpoints, tmp_path):
    fault = next(f for f in TRAINING_FAULTS if f.name == "train_speaker_wrong_slot")
    with fault.inject():
        code, out = _verify(checkpoints, tmp_path / "r", "--training")
    assert code == 1, out
    report, md = _report(tmp_path / "r")
    assert report["verdict"] == "FAIL"
    sec = report["training"]
    assert not sec["passed"] and not sec["checks"]["upstream_recipe_parity"]
    assert not sec["checks"]["aligned_consistent_with_generation"]
    failing = {c["case"] for p in sec["parity"] for c in p["comparisons"] if not c["passed"]}
    assert set(fault.parity_cases) <= failing
    assert "## Training: FAIL" in md and "| aligned | consistent | **inconsistent** |" in md
    assert all(f"fp32 {case}" in md for case in fault.parity_cases)


def test_self_test_catches_and_names_every_training_fault(tmp_path):
    names = [f.name for f in TRAINING_FAULTS]
    assert set(names) >= {
        "train_shifted_label",
        "train_wrong_cp_hidden",
        "train_wrong_loss_weight",
        "train_speaker_wrong_slot",
    }
    code, out = _run("--self-test", "--dtype", "fp32", "--faults", ",".join(names), "--report-dir", tmp_path)
    assert code == 0, out
    for name in names:
        assert any(line.split()[:3] == ["caught", "fp32", name] for line in out.splitlines()), (name, out)
    rows = json.loads((tmp_path / "faults.json").read_text())
    assert sorted(r["fault"] for r in rows) == sorted(names)
    assert all(r["ok"] and r["failing_components"] == ["training"] for r in rows)
    md = (tmp_path / "faults.md").read_text()
    assert f"**fp32: {len(names)} of {len(names)} planted faults caught and located.**" in md


def test_self_test_reports_a_training_fault_it_misses(tmp_path, monkeypatch):
    """A planted 'fault' that changes nothing must come out MISSED with exit 1: the self-test
    reports what it does not catch."""
    inert = TrainingFault("train_inert", "changes nothing", ("train.loss",), contextlib.nullcontext)
    monkeypatch.setattr(training_faults, "TRAINING_FAULTS", TRAINING_FAULTS + (inert,))
    code, out = _run("--self-test", "--dtype", "fp32", "--faults", "train_inert", "--report-dir", tmp_path)
    assert code == 1, out
    assert any(line.split()[:3] == ["MISSED", "fp32", "train_inert"] for line in out.splitlines()), out
