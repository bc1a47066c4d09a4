"""The tolerance table: every approximate bound admits its clean worst case and rejects the weakest
planted bug it is meant to catch, as the committed reports measured them (verify/report/bounds.py).
The README's table is rendered from the same rows (tests/test_readme_figures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from q3tts.verify.report.bounds import ROWS, table_lines, violations

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def test_every_bound_sits_between_its_clean_worst_and_its_weakest_planted_bug():
    assert violations(REPORTS) == []
    assert len(table_lines(REPORTS)) == 2 + len(ROWS)


@pytest.fixture
def reports_copy(tmp_path):
    dst = tmp_path / "reports"
    shutil.copytree(REPORTS, dst, ignore=shutil.ignore_patterns("*.md", "gate-matrix*", "real-size*"))
    return dst


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_clean_run_outside_its_bound_is_named(reports_copy):
    """A clean bf16 stream 1 dB under the SNR bound (as a noisier CPU could measure) is a violation."""

    def worse(data):
        data["runs"][-1]["clean"]["chunked"]["snr_db"] = 16.0

    _edit(reports_copy / "streaming-faults.json", worse)
    found = violations(reports_copy)
    assert found == ["streaming, chunked bf16 SNR dB (bound 17): the clean worst 16 is outside the bound"], found


def test_a_planted_bug_inside_its_bound_is_named(reports_copy):
    """A bound loosened past the bug it should catch: here the bug shrinks under the fp32 bound instead."""

    def milder(data):
        for run in data["runs"]:
            if run["dtype"] == "fp32":
                run["faults"]["less_context"]["worst"]["chunked"]["max_abs"] = 2e-4

    _edit(reports_copy / "streaming-faults.json", milder)
    found = violations(reports_copy)
    assert found == [
        "streaming, chunked fp32 max abs (bound 0.0003): the planted bug less_context (0.0002) is inside the bound"
    ], found


def test_a_fault_that_only_raised_is_not_a_catch(tmp_path):
    """The fast rows' weakest catch counts only faults that diverged (a crash is no catch): a fast
    self-test record whose every fault raised leaves nothing recorded, which is a violation."""
    from q3tts.verify.report.bounds import fast_rows

    (tmp_path / "fast_parity-bf16.json").write_text((REPORTS / "fast_parity-bf16.json").read_text())
    record = {
        "fault": "padded_position",
        "dtype": "bf16",
        "detected": True,
        "outcome": "caught",
        "failing_metrics": {"stepwise.batch.custom_voice.split_do_sample": {"max_rel": 0.087, "min_cosine": 0.99046}},
    }
    (tmp_path / "fast_faults.json").write_text(json.dumps([record]))
    step_cos = fast_rows("bf16")[2].measured(tmp_path)
    assert step_cos["fault"] == "padded_position" and step_cos["fault_outside"], step_cos
    assert fast_rows("bf16")[1].measured(tmp_path)["fault"] == "none recorded"  # 0.087 is inside the max-rel bound
    record.update(detected=False, outcome="crashed")
    (tmp_path / "fast_faults.json").write_text(json.dumps([record]))
    assert fast_rows("bf16")[2].measured(tmp_path)["fault"] == "none recorded"
