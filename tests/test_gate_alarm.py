"""The gate alarm: red exactly when a cell's outcome or failing cases change, or the verifier errs.

Each test plants one change on a copy of the committed cells (reports/gate-matrix/CELL/gate.json),
through the same path a real run takes (the inner run's parity.json or error.json, classified by
``classify``), and runs ``python -m q3tts.verify.gate.matrix --check`` on it against the committed
expected record. The unchanged copy must be green, so every red here is the planted change's doing.
The workflow tests keep .github/workflows/gate-matrix.yml runnable: its cells are CELLS and every
module and flag it calls exists. No upstream is imported.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from q3tts.verify.gate.alarm import EXPECTED, Expectation, compare, load_expected
from q3tts.verify.gate.matrix import CELLS, main, summarize
from q3tts.verify.gate.outcome import MAX_LISTED_FAILURES, classify, write_error
from q3tts.verify.report.parity import build_report

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "reports" / "gate-matrix"
WORKFLOW = ROOT / ".github" / "workflows" / "gate-matrix.yml"
NAMES = [c[0] for c in CELLS]
# Keys of gate.json that belong to the outcome (classify's output), replaced when one is planted.
OUTCOME_KEYS = ("outcome", "detail", "cases", "failures", "failures_total", "failing", "error", "fixtures")


@pytest.fixture
def cells(tmp_path) -> Path:
    """A copy of the committed cells to plant changes on."""
    return Path(shutil.copytree(COMMITTED, tmp_path / "gate-matrix"))


def run_check(cells_dir: Path, *args: str, expected: Path = EXPECTED):
    return CliRunner().invoke(main, ["--check", str(cells_dir), "--expected", str(expected), *args])


def red_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if ": as expected: " not in line and not line.startswith("gate ")]


def expected_failing(cell: str) -> set[str]:
    return set(load_expected()[cell].failing)


def plant(cells_dir: Path, cell: str, outcome: dict) -> None:
    """Replace the outcome of CELL/gate.json, keeping where and when it ran."""
    path = cells_dir / cell / "gate.json"
    gate = json.loads(path.read_text())
    for key in OUTCOME_KEYS:
        gate.pop(key, None)
    path.write_text(json.dumps(gate | outcome, indent=2))


def parity_outcome(scratch: Path, failing: set[str], passing: int = 3) -> dict:
    """classify() of an inner run whose failing cases are exactly ``failing`` (checkpoint/dtype/case)."""
    runs = {}
    for name in sorted(failing):
        checkpoint, dtype, case = name.split("/", 2)
        runs.setdefault((checkpoint, dtype), []).append(case)
    runs.setdefault(("tiny-base", "fp32"), [])
    report_runs = []
    for (checkpoint, dtype), bad in runs.items():
        cases = [_case(c, False, dtype) for c in bad] + [_case(f"ok.{i}", True, dtype) for i in range(passing)]
        report_runs.append(
            {"checkpoint": checkpoint, "source": "fixture", "dtype": dtype, "config": {}, "passed": not bad}
            | {"seconds_upstream": 1.0, "seconds_standalone": 1.0, "cases": cases}
        )
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "parity.json").write_text(json.dumps(build_report(report_runs, [0], 8)))
    return classify(scratch, child_rc=1 if failing else 0)


def _case(name: str, passed: bool, dtype: str) -> dict:
    return {
        "case": name,
        "component": name.split(".")[0],
        "kind": "forward",
        "dtype": dtype,
        "passed": passed,
        "metrics": {"max_abs": 0.0 if passed else 1.0},
        "first_bad_layer": None if passed else "talker.layers.0",
        "note": "",
    }


def upstream_broken_outcome(scratch: Path, line_padding: int = 0) -> dict:
    """classify() of an inner run stopped by an exception from (fake) upstream code at load."""
    pkg = scratch / "site-packages" / "qwen_tts"
    pkg.mkdir(parents=True)
    source = "\n" * line_padding + "def load(config):\n    return config.rope_theta\n"
    (pkg / "fake_loader.py").write_text(source)
    spec = importlib.util.spec_from_file_location(f"fake_qwen_tts_{line_padding}", pkg / "fake_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.load(object())
    except AttributeError as e:
        write_error(scratch / "report", e, "load")
    return classify(scratch / "report", child_rc=2)


def our_error_outcome(scratch: Path) -> dict:
    """classify() of an inner run stopped by an exception of the verifier's own (exit 2)."""
    try:
        {}["a key the verifier expected"]
    except KeyError as e:
        write_error(scratch, e, "run")
    out = classify(scratch, child_rc=2)
    assert out["outcome"] == "error"
    return out


# --------------------------------------------------------------------------------------------
# The committed record
# --------------------------------------------------------------------------------------------


def test_every_cell_has_a_measurement_and_an_expected_record():
    assert sorted(p.parent.name for p in COMMITTED.glob("*/gate.json")) == sorted(NAMES)
    assert list(load_expected()) == NAMES


def test_the_unchanged_matrix_is_green(cells):
    r = run_check(cells)
    assert r.exit_code == 0, r.output
    assert red_lines(r.output) == []
    assert r.output.splitlines()[-1] == f"gate alarm: {len(NAMES)} of {len(NAMES)} cells as expected"


def test_the_summary_reports_each_cell_against_its_record(cells, tmp_path):
    plant(cells, "qwen-tts-0.1.1", parity_outcome(tmp_path / "inner", {"tiny-base/fp32/talker.prefill.hidden"}))
    rows = {r["cell"]: r for r in summarize(cells, tmp_path / "reports")["cells"]}
    assert rows["qwen-tts-0.1.1"]["vs_expected"]["status"] == "changed"
    assert rows["qwen-tts-0.1.1"]["expected"] == {"outcome": "pass"}
    assert [c for c, r in rows.items() if r["vs_expected"]["red"]] == ["qwen-tts-0.1.1"]
    md = (tmp_path / "reports" / "gate-matrix.md").read_text()
    assert "**changed**: pass -> parity-fail" in md


# --------------------------------------------------------------------------------------------
# Each planted change turns the alarm red, naming the cell and what changed
# --------------------------------------------------------------------------------------------


def test_a_passing_cell_that_now_fails_parity_is_red(cells, tmp_path):
    plant(cells, "qwen-tts-0.1.1", parity_outcome(tmp_path / "inner", {"tiny-base/fp32/talker.prefill.hidden"}))
    r = run_check(cells)
    assert r.exit_code == 1
    assert red_lines(r.output) == [
        "qwen-tts-0.1.1: changed: pass -> parity-fail (1 failing cases): tiny-base/fp32/talker.prefill.hidden"
    ]


def test_an_expected_parity_fail_with_one_more_failing_case_is_red(cells, tmp_path):
    extra = "tiny-custom_voice/fp32/generation.plain.streaming.greedy"
    failing = expected_failing("qwen-tts-0.1.0")
    assert failing and extra not in failing
    plant(cells, "qwen-tts-0.1.0", parity_outcome(tmp_path / "inner", failing | {extra}))
    r = run_check(cells, "--cell", "qwen-tts-0.1.0")
    assert r.exit_code == 1
    n = len(failing)
    assert red_lines(r.output) == [
        f"qwen-tts-0.1.0: changed: parity-fail with {n + 1} failing cases instead of {n}; now failing: {extra}"
    ]


def test_an_expected_parity_fail_with_one_case_fewer_is_red(cells, tmp_path):
    fixed = "tiny-voice_design/fp32/audio.80_frames"
    failing = expected_failing("qwen-tts-0.0.5")
    assert fixed in failing
    plant(cells, "qwen-tts-0.0.5", parity_outcome(tmp_path / "inner", failing - {fixed}))
    r = run_check(cells)
    assert r.exit_code == 1
    n = len(failing)
    assert red_lines(r.output) == [
        f"qwen-tts-0.0.5: changed: parity-fail with {n - 1} failing cases instead of {n}; no longer failing: {fixed}"
    ]


def test_the_same_number_of_other_failing_cases_is_red(cells, tmp_path):
    failing = expected_failing("qwen-tts-0.0.2")
    swapped = (failing - {"tiny-base/fp32/audio.5_frames"}) | {"tiny-base/fp32/codec.decode"}
    plant(cells, "qwen-tts-0.0.2", parity_outcome(tmp_path / "inner", swapped))
    r = run_check(cells)
    assert r.exit_code == 1
    (line,) = red_lines(r.output)
    assert "now failing: tiny-base/fp32/codec.decode" in line
    assert "no longer failing: tiny-base/fp32/audio.5_frames" in line


def test_a_parity_fail_that_becomes_upstream_broken_is_red(cells, tmp_path):
    plant(cells, "qwen-tts-0.0.2", upstream_broken_outcome(tmp_path / "inner"))
    r = run_check(cells)
    assert r.exit_code == 1
    assert red_lines(r.output) == [
        f"qwen-tts-0.0.2: changed: parity-fail ({len(expected_failing('qwen-tts-0.0.2'))} failing cases) -> "
        "upstream-broken (load: AttributeError at qwen_tts/fake_loader.py:2)"
    ]


def test_an_upstream_break_that_moves_is_red(cells, tmp_path):
    plant(cells, "qwen-tts-hf-0.1.1.post1-tf5.20.0", upstream_broken_outcome(tmp_path / "inner", line_padding=5))
    r = run_check(cells)
    assert r.exit_code == 1
    (line,) = red_lines(r.output)
    assert line.startswith("qwen-tts-hf-0.1.1.post1-tf5.20.0: changed: upstream-broken elsewhere: ")
    assert "qwen_tts/fake_loader.py:7 (expected: load: AttributeError at qwen_tts/_transformers_compat.py:18)" in line


@pytest.mark.parametrize("cell", ["qwen-tts-0.1.1", "qwen-tts-hf-0.1.1.post1-tf5.24.0", "qwen-tts-0.0.4"])
def test_our_own_error_is_red_whatever_was_expected(cells, tmp_path, cell):
    plant(cells, cell, our_error_outcome(tmp_path / "inner"))
    r = run_check(cells)
    assert r.exit_code == 1
    assert red_lines(r.output) == [
        f"{cell}: our error: the verifier crashed (exit 2): KeyError: 'a key the verifier expected'"
    ]


def test_a_cell_that_left_no_gate_json_is_red(cells):
    (cells / "qwen-tts-0.1.1" / "gate.json").unlink()
    r = run_check(cells)
    assert r.exit_code == 1
    assert red_lines(r.output) == ["qwen-tts-0.1.1: missing: no gate.json: the cell did not finish"]


def test_on_github_actions_a_red_line_is_an_error_annotation(cells, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    plant(cells, "qwen-tts-0.1.1", our_error_outcome(tmp_path / "inner"))
    lines = run_check(cells).output.splitlines()
    assert lines[0].startswith("::error::qwen-tts-0.1.1: our error: ")
    assert not any(line.startswith("::error::") for line in lines[1:])


def test_install_failures_are_red_only_when_they_change():
    gate = {"outcome": "install-fail", "detail": "installing qwen-tts==9 failed:\nERROR: no matching distribution"}
    same = Expectation("install-fail", signature="installing qwen-tts==9 failed:")
    assert not compare("c", same, gate).red
    other = Expectation("install-fail", signature="installing the requirements of qwen-tts==9 failed:")
    assert compare("c", other, gate).line() == (
        "c: changed: install-fail elsewhere: installing qwen-tts==9 failed: "
        "(expected: installing the requirements of qwen-tts==9 failed:)"
    )
    assert compare("c", Expectation("pass"), gate).red


# --------------------------------------------------------------------------------------------
# The record: complete beyond the detailed list, updated deliberately, never with our own error
# --------------------------------------------------------------------------------------------


def test_the_record_holds_every_failing_case_beyond_the_detailed_list(cells, tmp_path):
    failing = {f"tiny-base/fp32/case.{i:02d}" for i in range(MAX_LISTED_FAILURES + 5)}
    outcome = parity_outcome(tmp_path / "a", failing)
    assert len(outcome["failures"]) == MAX_LISTED_FAILURES and set(outcome["failing"]) == failing
    plant(cells, "qwen-tts-0.1.1", outcome)
    expected = tmp_path / "expected.json"
    shutil.copy(EXPECTED, expected)
    r = CliRunner().invoke(main, ["--accept", str(cells), "--cell", "qwen-tts-0.1.1", "--expected", str(expected)])
    assert r.exit_code == 0, r.output
    assert "qwen-tts-0.1.1: pass -> parity-fail (25 failing cases)" in r.output
    assert run_check(cells, expected=expected).exit_code == 0
    # A case beyond the detailed list (sorted last, so not among the first 20) passes again.
    last = sorted(failing)[-1]
    assert last not in {f"{f['checkpoint']}/{f['dtype']}/{f['case']}" for f in outcome["failures"]}
    plant(cells, "qwen-tts-0.1.1", parity_outcome(tmp_path / "b", failing - {last}))
    r = run_check(cells, expected=expected)
    assert r.exit_code == 1 and f"no longer failing: {last}" in r.output


def test_a_capped_list_without_the_complete_one_is_not_compared(cells):
    path = cells / "qwen-tts-0.0.3" / "gate.json"
    gate = json.loads(path.read_text())
    gate.pop("failing", None)
    gate["failures_total"] = len(gate["failures"]) + 1  # as if one more failed than were listed
    path.write_text(json.dumps(gate))
    r = run_check(cells)
    assert r.exit_code == 1
    (line,) = red_lines(r.output)
    assert line.startswith("qwen-tts-0.0.3: cannot compare: ") and "rerun the cell" in line


def test_accepting_a_deliberate_change_turns_the_alarm_green_and_touches_only_that_cell(cells, tmp_path):
    plant(cells, "qwen-tts-0.1.0", parity_outcome(tmp_path / "inner", set()))  # as if upstream fixed it
    expected = tmp_path / "expected.json"
    shutil.copy(EXPECTED, expected)
    assert run_check(cells, expected=expected).exit_code == 1
    r = CliRunner().invoke(main, ["--accept", str(cells), "--cell", "qwen-tts-0.1.0", "--expected", str(expected)])
    n = len(expected_failing("qwen-tts-0.1.0"))
    assert r.exit_code == 0 and f"qwen-tts-0.1.0: parity-fail ({n} failing cases) -> pass: pass" in r.output
    assert run_check(cells, expected=expected).exit_code == 0
    before, after = load_expected(EXPECTED), load_expected(expected)
    assert [c for c in NAMES if before[c] != after[c]] == ["qwen-tts-0.1.0"]
    assert list(after) == NAMES


def test_accept_drops_the_record_of_a_cell_that_left_the_matrix(cells, tmp_path):
    expected = tmp_path / "expected.json"
    record = json.loads(EXPECTED.read_text())
    record["cells"]["qwen-tts-9.9.9"] = {"outcome": "pass"}
    expected.write_text(json.dumps(record))
    assert "qwen-tts-9.9.9" in load_expected(expected)
    r = CliRunner().invoke(main, ["--accept", str(cells), "--cell", "qwen-tts-0.1.1", "--expected", str(expected)])
    assert r.exit_code == 0 and "qwen-tts-9.9.9: dropped: no longer a cell of the matrix" in r.output
    assert list(load_expected(expected)) == NAMES


def test_our_own_error_is_never_recorded_as_expected(cells, tmp_path):
    plant(cells, "qwen-tts-0.1.1", our_error_outcome(tmp_path / "inner"))
    expected = tmp_path / "expected.json"
    shutil.copy(EXPECTED, expected)
    r = CliRunner().invoke(main, ["--accept", str(cells), "--cell", "all", "--expected", str(expected)])
    assert r.exit_code == 1
    assert "qwen-tts-0.1.1: not recorded as expected (the verifier crashed: KeyError" in r.output
    assert expected.read_text() == EXPECTED.read_text()  # nothing written


def test_accept_needs_the_cells_named(cells, tmp_path):
    r = CliRunner().invoke(main, ["--accept", str(cells), "--expected", str(tmp_path / "e.json")])
    assert r.exit_code == 2 and "--cell" in r.output
    r = CliRunner().invoke(main, ["--check", str(cells), "--cell", "qwen-tts-9.9.9"])
    assert r.exit_code == 2 and "unknown cell 'qwen-tts-9.9.9'" in r.output


# --------------------------------------------------------------------------------------------
# The workflow runs what exists, on the cells of CELLS
# --------------------------------------------------------------------------------------------


def matrix_cells(text: str) -> list[str]:
    """jobs.cell.strategy.matrix.cell: with PyYAML when installed, else from the list's lines."""
    try:
        import yaml
    except ImportError:
        block = re.search(r"^( +)matrix:\n(?:\1 +#.*\n)*\1 +cell:\n((?:\1 +- .*\n)+)", text, re.MULTILINE)
        return [line.strip()[2:].strip() for line in block.group(2).splitlines()] if block else []
    return yaml.safe_load(text)["jobs"]["cell"]["strategy"]["matrix"]["cell"]


def workflow_problems(text: str) -> list[str]:
    """What would make the workflow run something else than CELLS, or fail to run at all."""
    problems = []
    cells = matrix_cells(text)
    if cells != NAMES:
        problems.append(f"matrix cells {cells} are not gate.matrix.CELLS {NAMES}")
    flags = {opt for p in main.params for opt in p.opts}
    for module, rest in re.findall(r"python -m ([\w.]+)([^\n|&;]*)", text):
        if module == "pip":
            # pip is the installer the workflow bootstraps; asking for its spec here would disable setuptools'
            # distutils shim in this process (_distutils_hack's spec_for_pip), after which torch.compile's
            # import of setuptools fails in every later test on this worker
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            problems.append(f"python -m {module}: no such module")
        elif module == "q3tts.verify.gate.matrix":
            problems += [f"{module} has no option {f}" for f in re.findall(r"--[\w-]+", rest) if f not in flags]
    return problems


def test_the_workflow_runs_the_cells_of_the_matrix_module():
    text = WORKFLOW.read_text()
    assert workflow_problems(text) == []
    assert re.search(r"--check gate-matrix --cell \"\$\{\{ matrix.cell \}\}\"", text)  # the job's verdict


def test_the_workflow_check_catches_drift():
    text = WORKFLOW.read_text()
    moved = text.replace("q3tts.verify.gate.matrix --summarize", "q3tts.verify.gate_matrix --summarize")
    assert workflow_problems(moved) == ["python -m q3tts.verify.gate_matrix: no such module"]
    dropped = text.replace(f"          - {NAMES[-1]}\n", "")
    assert len(workflow_problems(dropped)) == 1 and "are not gate.matrix.CELLS" in workflow_problems(dropped)[0]
    renamed = text.replace("--check gate-matrix --cell", "--alarm gate-matrix --cell")
    assert workflow_problems(renamed) == ["q3tts.verify.gate.matrix has no option --alarm"]


def test_the_fallback_parse_of_the_matrix_agrees_with_yaml(monkeypatch):
    text = WORKFLOW.read_text()
    with_yaml = matrix_cells(text)
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    assert matrix_cells(text) == with_yaml == NAMES
