"""The README's generated figures equal what the committed reports render (verify/report/readme.py)."""

from __future__ import annotations

from pathlib import Path

from q3tts.verify.report.claims import cited_reports, readme_units, unchecked_claims
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
        "fast_parity.json",
        "fast_parity-bf16.json",
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


def test_every_measured_readme_figure_is_found_in_the_report_it_cites():
    """Item 8 of issue 27: the prose and tables written by hand hold only figures their cited report
    holds (verify/report/claims.py); a budget, limit or quoted size says so in place."""
    problems = unchecked_claims((ROOT / "README.md").read_text(), ROOT / "reports")
    assert problems == [], "\n".join(problems)


def test_a_drifted_or_uncited_figure_is_named(tmp_path):
    """Planted on a copy of the README: a figure changed in a cited sentence, the citation removed
    from a sentence with figures, a cited report that does not exist, and a marker that exempts
    one figure but not its neighbour. Each is named with its line; the clean README has none."""
    text = (ROOT / "README.md").read_text()
    reports = ROOT / "reports"
    assert unchecked_claims(text, reports) == []
    cited = "Conversion (`reports/convert-benchmark.md`; 1.7B-Base layout"
    assert cited in text
    drifted = text.replace("page cache dropped): 19.3 s, 236 MB/s", "page cache dropped): 19.3 s, 263 MB/s", 1)
    assert drifted != text
    [problem] = unchecked_claims(drifted, reports)
    assert "263 MB/s not in reports/convert-benchmark.md" in problem and problem.startswith("README.md:")
    uncited = text.replace(cited, "Conversion (1.7B-Base layout", 1)
    [problem] = unchecked_claims(uncited, reports)
    assert "19.3 s" in problem and "without a report" in problem
    missing = text.replace(cited, "Conversion (`reports/convert-benchmark-old.md`; 1.7B-Base layout", 1)
    [problem] = unchecked_claims(missing, reports)
    assert "reports/convert-benchmark-old.md, which does not exist" in problem
    marked = "Measured 12.5 ms and 7 GB<!-- not measured: 7 GB --> here.\n"
    [problem] = unchecked_claims(marked, tmp_path)
    assert "12.5 ms without a report" in problem and "7 GB" not in problem
    assert unchecked_claims("Measured 12.5 ms here.<!-- not measured -->\n", tmp_path) == []


def test_units_are_paragraphs_items_and_rows_and_rows_take_the_citation_above():
    text = "Intro (`reports/a.md`):\n\n| x | 1.5 ms |\n\n# Next\n\n| y | 2.5 ms |\n- an item 3 s\n  continued 4 s\n"
    units = readme_units(text)
    assert [(u.line, u.kind) for u in units] == [
        (1, "paragraph"), (3, "row"), (5, "heading"), (7, "row"), (8, "paragraph")
    ]  # fmt: skip
    refs = [refs for _, refs in cited_reports(units)]
    assert refs == [["a.md"], ["a.md"], [], [], []]
