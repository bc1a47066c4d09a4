"""The upstream-release gate: tiny parity in a fresh virtualenv with a given qwen-tts.

    verify-parity --against-upstream 0.1.1        # a pinned release
    verify-parity --against-upstream latest       # the newest release on the index

It creates a virtualenv, installs ``qwen-tts==VERSION`` (which brings its own transformers pin)
with the reference stack of requirements-reference.txt minus qwen-tts and transformers, installs
this project without dependencies, runs ``verify-parity`` on the embedded tiny fixtures inside
it, and leaves the report (parity.json, parity.md, gate.json) in the report directory. The exit
code is the child's: 0 only when every case passes, so a scheduled CI job fails on any break.

``--reuse-torch`` lets the new environment see this environment's packages (a .pth entry), so
only what VERSION needs differently is installed: a fast check of the command itself, used by the
test suite on the pinned version.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import click

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT_ROOT / "requirements-reference.txt"


def latest_version() -> str:
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "qwen-tts"], capture_output=True, text=True)
    m = re.search(r"qwen-tts \(([^)]+)\)", r.stdout)
    if r.returncode or not m:
        raise RuntimeError(
            f"cannot find the newest qwen-tts release on the index: {r.stderr.strip() or r.stdout.strip()}"
        )
    return m.group(1)


def reference_requirements() -> list[str]:
    """The reference stack without qwen-tts and transformers (the release under test brings its pin)."""
    if not REFERENCE.is_file():
        raise RuntimeError(f"{REFERENCE} not found: the gate runs from a source checkout of qwen3-tts-standalone")
    reqs = []
    for line in REFERENCE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower() if line else ""
        if line and name not in ("qwen-tts", "transformers", "pytest", "pytest-timeout", "hypothesis"):
            reqs.append(line)
    return reqs


def _run(cmd: list[str], what: str) -> None:
    click.echo(f"gate: {what}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed:\n{tail}")


def run_gate(
    version: str,
    report_dir: Path,
    reuse_torch: bool = False,
    extra_args: list[str] | None = None,
    keep_venv: Path | None = None,
) -> bool:
    t0 = time.perf_counter()
    resolved = latest_version() if version == "latest" else version
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise RuntimeError(f"{PROJECT_ROOT} is not a source checkout (no pyproject.toml)")
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="q3tts-gate-"))
    venv = keep_venv or work / "venv"
    try:
        py = venv / "bin" / "python"
        if reuse_torch:
            # No pip/setuptools of its own: this environment's (seen through a .pth entry) build and
            # install into it, so nothing is downloaded when VERSION is what is installed here.
            _run(
                [sys.executable, "-m", "venv", "--without-pip", str(venv)],
                f"creating a virtualenv for qwen-tts {resolved}",
            )
            site = subprocess.run(
                [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            Path(site, "_q3tts_gate_reuse.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
            pip = [sys.executable, "-m", "pip", "--python", str(py)]
            isolation = ["--no-build-isolation"]
        else:
            _run([sys.executable, "-m", "venv", str(venv)], f"creating a virtualenv for qwen-tts {resolved}")
            pip = [str(py), "-m", "pip"]
            isolation = []
        _run(
            [*pip, "install", "--quiet", f"qwen-tts=={resolved}", *reference_requirements()],
            f"installing qwen-tts=={resolved} and the reference stack",
        )
        _run(
            [*pip, "install", "--quiet", "--no-deps", *isolation, str(PROJECT_ROOT)], "installing qwen3-tts-standalone"
        )
        click.echo("gate: running verify-parity on the tiny fixtures")
        child = subprocess.run(
            [str(py), "-m", "q3tts.verify.cli", "--report-dir", str(report_dir), *(extra_args or [])],
            capture_output=True,
            text=True,
            cwd=work,
        )
        click.echo(
            "\n".join(line for line in child.stdout.splitlines() if line.startswith(("verdict", "  ", "report")))
        )
        if child.returncode not in (0, 1):
            raise RuntimeError(f"verify-parity crashed in the gate environment:\n{child.stderr.strip()[-2000:]}")
        installed = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('qwen-tts'), m.version('transformers'))"],
            capture_output=True,
            text=True,
        ).stdout.split()
        gate = {
            "requested": version,
            "qwen-tts": installed[0] if installed else None,
            "transformers": installed[1] if len(installed) > 1 else None,
            "reuse_torch": reuse_torch,
            "passed": child.returncode == 0,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (report_dir / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
        click.echo(
            f"gate: qwen-tts {gate['qwen-tts']} (transformers {gate['transformers']}): "
            f"{'PASS' if gate['passed'] else 'FAIL'} in {gate['seconds']} s"
        )
        return gate["passed"]
    finally:
        if keep_venv is None:
            shutil.rmtree(work, ignore_errors=True)
