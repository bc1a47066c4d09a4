"""Every measured figure in the README traced to a committed report.

The generated blocks (readme.py) are re-rendered from the reports. Everything else in the README is
prose written by hand, and a number in it can drift from the run it came from. This module reads the
README as units (a paragraph, a list item, a table row) and finds each unit's measured figures: a
number with a unit of time, rate, size, level or ratio (``269.5 ms``, ``25 GB/s``, ``95.0 dB``,
``3.69x``, ``62%``). Such a unit must name the report it comes from (``reports/NAME``; a table row
may rely on the paragraph just above its table), and every figure must be found in that report:
written the same way in its Markdown, or equal to a number of its JSON (or of the Markdown) rounded
to the figure's decimals, in the same unit or 1000x apart (``0.57 s`` from ``570 ms``).

A figure that is not a measurement (a budget, a limit, a size quoted from elsewhere) is said so in
place: ``<!-- not measured: 7 GB, 30 s -->`` (or ``<!-- derived: 2.75 x -->`` for a ratio of two reported
figures) in its unit exempts those figures, ``<!-- not measured
-->`` the whole unit. ``python -m q3tts.verify.report.claims`` lists what fails. tests/test_readme_figures.py runs the check and plants both kinds of drift.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from q3tts.verify.report.readme import BLOCK, ROOT

NOT_MEASURED = re.compile(r"<!-- (?:not measured|derived)(?::\s*(?P<figures>[^>]*?))?\s*-->")
_REPORT = re.compile(r"reports/([\w.*-]+(?:/[\w.*-]+)*)")
_FIGURE = re.compile(r"(?<![\w.^/-])(\d+(?:\.\d+)?(?:e-?\d+)?)\s?(ms/frame|ms|s|min|GB/s|MB/s|GB|MB|dB|x|%)(?![\w/])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_ITEM = re.compile(r"\s*(?:[-*]|\d+\.) ")


@dataclass(frozen=True)
class Unit:
    line: int  # 1-based line of the README where the unit starts
    text: str
    kind: str  # "paragraph" or "row"


def readme_units(text: str) -> list[Unit]:
    """Paragraphs, list items and table rows outside code fences and generated blocks, in order.
    A heading is a unit of its own (kind "heading") so a table never inherits across one."""
    text = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    units: list[Unit] = []
    buf: list[str] = []
    start, fenced = 0, False

    def flush():
        if buf:
            units.append(Unit(start, " ".join(s.strip() for s in buf), "paragraph"))
            buf.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            flush()
            fenced = not fenced
        elif fenced:
            continue
        elif line.startswith("#") or line.startswith("|") or not line.strip():
            flush()
            if line.strip():
                units.append(Unit(number, line, "heading" if line.startswith("#") else "row"))
        else:
            if _ITEM.match(line):
                flush()
            if not buf:
                start = number
            buf.append(line)
    flush()
    return units


def cited_reports(units: list[Unit]) -> list[tuple[Unit, list[str]]]:
    """Each unit with the reports it cites; a table row without its own also takes those of the
    paragraph just above its table."""
    out, above = [], []
    for u in units:
        own = [m.group(1).rstrip(".,;:)") for m in _REPORT.finditer(u.text)]
        if u.kind == "heading":
            above = []
        elif u.kind == "paragraph":
            above = own
        out.append((u, own or (above if u.kind == "row" else [])))
    return out


def _report_files(reports: Path, ref: str) -> list[Path]:
    """The cited file (and its .md/.json twin), every file under a cited directory, or the files a
    cited pattern (``frame-profile-*.md``) matches."""
    if "*" in ref:
        return [
            f for match in sorted(reports.glob(ref)) for f in _report_files(reports, str(match.relative_to(reports)))
        ]
    path = reports / ref
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".md", ".json"))
    twins = [path.with_suffix(s) for s in (".md", ".json")] if path.suffix in (".md", ".json") else []
    return [p for p in dict.fromkeys([path, *twins]) if p.is_file()]


def _normal(figure: str) -> str:
    return re.sub(r"\s+", "", figure)


def _found(figure: str, text: str, numbers: list[float]) -> bool:
    if re.search(r"(?<![\d.])" + re.escape(figure) + r"(?![\d])", text):
        return True
    value = float(figure)
    decimals = len(figure.split(".")[1]) if "." in figure and "e" not in figure else 0
    return any(round(n * scale, decimals) == value for n in numbers for scale in (1, 1000, 0.001))


def unchecked_claims(readme: str, reports: Path) -> list[str]:
    """One line per problem: a unit with measured figures and no report, a cited report that does
    not exist, or a figure its report does not hold."""
    problems = []
    for unit, refs in cited_reports(readme_units(readme)):
        found = [(f"{v} {u}", v) for v, u in _FIGURE.findall(unit.text)]
        marks = [m.group("figures") for m in NOT_MEASURED.finditer(unit.text)]
        if any(m is None for m in marks):
            continue
        exempt = {_normal(f) for m in marks for f in m.split(",")}
        found = [(f, v) for f, v in found if _normal(f) not in exempt]
        figures = [f for f, _ in found]
        if not figures:
            continue
        where = f"README.md:{unit.line}"
        if not refs:
            problems.append(
                f"{where}: {', '.join(figures)} without a report (cite reports/NAME, or <!-- not measured -->)"
            )
            continue
        files = [f for ref in refs for f in _report_files(reports, ref)]
        missing = [ref for ref in refs if not _report_files(reports, ref)]
        if missing:
            problems.append(f"{where}: cites {', '.join('reports/' + m for m in missing)}, which does not exist")
            continue
        text = "\n".join(f.read_text(errors="replace") for f in files)
        numbers = [float(n) for n in _NUMBER.findall(text)]
        absent = [f for f, v in found if not _found(v, text, numbers)]
        if absent:
            problems.append(f"{where}: {', '.join(absent)} not in {', '.join('reports/' + r for r in refs)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    problems = unchecked_claims((ROOT / "README.md").read_text(), ROOT / "reports")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
