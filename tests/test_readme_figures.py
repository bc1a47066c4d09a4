"""The README's generated figures equal what the committed reports render (verify/report/readme.py)."""

from __future__ import annotations

from pathlib import Path

from q3tts.verify.report.readme import BLOCKS, render, stale_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_every_generated_readme_figure_matches_its_report():
    text = (ROOT / "README.md").read_text()
    assert stale_blocks(text, ROOT / "reports") == [], "run: python -m q3tts.verify.report.readme"


def test_a_figure_edited_by_hand_or_a_changed_report_is_caught(tmp_path):
    """Planted: one digit of the verdict changed in the README, then a report changed under an
    unchanged README; each is named as stale. A block removed from the README is named as missing."""
    text = (ROOT / "README.md").read_text()
    reports = ROOT / "reports"
    edited = text.replace("cases pass)` on", "cases pass)`  on", 1)
    assert edited != text and stale_blocks(edited, reports) == ["parity-verdict"]
    copy = tmp_path / "reports"
    copy.mkdir()
    (copy / "gguf-engine-parity").mkdir()
    for name in (
        "parity.json",
        "faults.json",
        "fast_faults.json",
        "streaming-faults.json",
        "mixed-faults.json",
        "gguf-engine-parity/engine-faults.json",
    ):
        (copy / name).write_text((reports / name).read_text())
    (copy / "faults.json").write_text(
        (copy / "faults.json").read_text().replace('"outcome": "caught"', '"outcome": "missed"', 1)
    )
    # the first fault marked missed: the counts change, and so does the tolerance table (its weakest
    # fp32 catch was that fault)
    assert stale_blocks(text, copy) == ["self-test-counts", "tolerance-table"]
    start = text.index("<!-- figures:knob-table -->")
    end = text.index("<!-- /figures:knob-table -->") + len("<!-- /figures:knob-table -->")
    assert stale_blocks(text[:start] + text[end:], reports) == ["knob-table (missing)"]
    assert render(text, reports) == text and set(BLOCKS) >= {"parity-verdict", "knob-table"}
