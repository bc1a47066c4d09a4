"""The upstream gate: tiny parity in a fresh virtualenv, over three axes.

    verify-parity --against-upstream 0.1.1                                   # qwen-tts 0.1.1 on its pin
    verify-parity --against-upstream latest                                  # the newest qwen-tts
    verify-parity --against-upstream qwen-tts-hf==0.1.1.post1 --transformers 5.24.0
    verify-parity --against-upstream qwen-tts-hf==latest                     # newest of that distribution
    verify-parity --against-upstream qwen-tts-compat==0.1.1.post1 --transformers 5.24.0

The axes are the distribution (qwen-tts, or one of the transformers-5 forks users install instead:
qwen-tts-hf and qwen-tts-compat, both shipping the same ``qwen_tts`` import package), its version,
and transformers. Without ``--transformers`` the distribution's own pin decides; with it the release
is installed with ``--no-deps`` and its other requirements next to the requested transformers, the
way projects escaping the pin install it.

The gate creates a virtualenv, installs the release, the reference stack of
requirements-reference.txt (minus qwen-tts and transformers) and this project (without
dependencies), runs ``verify-parity`` on the embedded tiny fixtures inside it, and writes
gate.json next to parity.json/parity.md in the report directory. The outcome (outcome.py) is
one of pass / parity-fail / upstream-broken / install-fail (or error: the verifier itself crashed);
the exit code tells them apart (EXIT_CODES). The gate matrix judges a cell by comparing its outcome
with the one recorded as expected (alarm.py), not by this code: some releases fail by design.

``--reuse-torch`` lets the new environment see this environment's packages through a .pth entry,
so only what the release needs differently is installed (``base_site`` names another directory
to layer over, e.g. a torch-only base shared by the cells of the matrix).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from q3tts.verify.gate.outcome import EXIT_CODES, SPECS_ENV, classify, console_lines

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = PROJECT_ROOT / "requirements-reference.txt"
SPECS = PROJECT_ROOT / "tests" / "golden" / "fixture_tensors.json"
DISTRIBUTIONS = ("qwen-tts", "qwen-tts-hf", "qwen-tts-compat")
# Names of the reference stack the gate leaves to the release under test (or does not need).
_NOT_FROM_REFERENCE = (*DISTRIBUTIONS, "transformers", "pytest", "pytest-timeout", "hypothesis")


class InstallError(RuntimeError):
    """pip could not build the environment (the install-fail outcome)."""


def parse_target(spec: str) -> tuple[str, str]:
    """(distribution, version) of ``--against-upstream``: VERSION, latest, DIST, DIST==VERSION."""
    spec = spec.strip()
    dist, sep, version = spec.partition("==")
    if not sep:
        dist, version = (spec, "latest") if spec.lower() in DISTRIBUTIONS else ("qwen-tts", spec)
    dist = dist.strip().lower().replace("_", "-")
    if dist not in DISTRIBUTIONS:
        raise click.BadParameter(
            f"unknown distribution {dist!r} in {spec!r}; one of {', '.join(DISTRIBUTIONS)}",
            param_hint="--against-upstream",
        )
    if not re.fullmatch(r"latest|[0-9][0-9A-Za-z.+!-]*", version.strip()):
        raise click.BadParameter(f"not a version: {version!r}", param_hint="--against-upstream")
    return dist, version.strip()


def latest_version(dist: str = "qwen-tts") -> str:
    """The newest release of ``dist`` on the package index."""
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", dist], capture_output=True, text=True)
    m = re.search(rf"^{re.escape(dist)} \(([^)]+)\)", r.stdout, re.MULTILINE)
    if r.returncode or not m:
        raise InstallError(
            f"cannot find the newest {dist} release on the index: {r.stderr.strip() or r.stdout.strip()}"
        )
    return m.group(1)


def reference_requirements() -> list[str]:
    """The reference stack without the release under test and its transformers."""
    if not REFERENCE.is_file():
        raise RuntimeError(f"{REFERENCE} not found: the gate runs from a source checkout of qwen3-tts-standalone")
    reqs = []
    for line in REFERENCE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower() if line else ""
        if line and name not in _NOT_FROM_REFERENCE:
            reqs.append(line)
    return reqs


def _pip(pip: list[str], args: list[str], what: str) -> None:
    r = subprocess.run([*pip, *args], capture_output=True, text=True)
    if r.returncode:
        lines = [x for x in (r.stdout + r.stderr).strip().splitlines() if "is ignored: it is neither" not in x]
        raise InstallError(f"{what} failed:\n" + "\n".join(lines[-15:]))


def make_env(venv: Path, base_site: str | None) -> tuple[Path, list[str], list[str]]:
    """(python, pip command, build flags) of a new virtualenv, layered over ``base_site`` if given."""
    py = venv / "bin" / "python"
    if base_site is None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        return py, [str(py), "-m", "pip"], []
    # No pip/setuptools of its own: the base's (seen through a .pth entry) build and install into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_q3tts_gate_base.pth").write_text(base_site + "\n")
    return py, [sys.executable, "-m", "pip", "--python", str(py)], ["--no-build-isolation"]


def release_requirements(py: Path, dist: str, drop_transformers: bool) -> list[str]:
    """The installed release's own requirements (its extras left out), without transformers if asked."""
    code = "import importlib.metadata as m, sys; print('\\n'.join(m.requires(sys.argv[1]) or []))"
    out = subprocess.run([str(py), "-c", code, dist], capture_output=True, text=True, check=True).stdout
    reqs = []
    for req in out.splitlines():
        name = re.split(r"[<>=!~\[ ;(]", req.strip(), maxsplit=1)[0].lower()
        if "extra ==" in req or (drop_transformers and name == "transformers"):
            continue
        reqs.append(req.strip())
    return reqs


def install(py: Path, pip: list[str], build: list[str], dist: str, version: str, transformers: str | None) -> None:
    quiet = ["install", "--quiet", "--disable-pip-version-check"]
    _pip(pip, [*quiet, "--no-deps", f"{dist}=={version}"], f"installing {dist}=={version}")
    reqs = release_requirements(py, dist, drop_transformers=transformers is not None)
    pinned = [f"transformers=={transformers}"] if transformers else []
    what = f"installing the requirements of {dist}=={version}" + (f" with {pinned[0]}" if pinned else "")
    _pip(pip, [*quiet, *reqs, *pinned, *reference_requirements()], what)
    _pip(pip, [*quiet, "--no-deps", *build, str(PROJECT_ROOT)], "installing qwen3-tts-standalone")


def installed_versions(py: Path) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as m, json\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        f"print(json.dumps({{n: v(n) for n in {(*DISTRIBUTIONS, 'transformers', 'torch')!r}}}))"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def run_child(py: Path, report_dir: Path, extra_args: list[str], cwd: Path) -> tuple[int, str]:
    """verify-parity on the tiny fixtures inside the environment; its console streamed, indented."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if SPECS.is_file():  # what the fixture factory falls back on when upstream's classes cannot build
        env[SPECS_ENV] = str(SPECS)
    cmd = [str(py), "-m", "q3tts.verify.cli", "--report-dir", str(report_dir), "--no-sensitivity", *extra_args]
    stderr_file = cwd / "child-stderr.txt"
    with open(stderr_file, "w") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd, env=env)
        for line in child.stdout:
            if line.strip() and not line.startswith("report:"):
                click.echo("  | " + line.rstrip())
        rc = child.wait()
    return rc, stderr_file.read_text()[-4000:]


def _clear(report_dir: Path) -> None:
    for name in ("gate.json", "parity.json", "parity.md", "error.json"):
        (report_dir / name).unlink(missing_ok=True)


def run_gate(
    spec: str,
    report_dir: Path,
    transformers: str | None = None,
    reuse_torch: bool = False,
    base_site: str | None = None,
    extra_args: list[str] | None = None,
    keep_venv: Path | None = None,
) -> int:
    """One gate cell; writes report_dir/gate.json and returns the exit code of its outcome."""
    t0 = time.perf_counter()
    dist, version = parse_target(spec)
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise RuntimeError(f"{PROJECT_ROOT} is not a source checkout (no pyproject.toml)")
    if reuse_torch and base_site is None:
        base_site = sysconfig.get_paths()["purelib"]
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    _clear(report_dir)
    work = Path(tempfile.mkdtemp(prefix="q3tts-gate-"))
    venv = keep_venv or work / "venv"
    gate = {"requested": {"upstream": spec, "transformers": transformers}, "distribution": dist}
    install_error, rc, child_err, t_install = None, None, "", 0.0
    try:
        try:
            version = latest_version(dist) if version == "latest" else version
            if transformers == "latest":
                transformers = latest_version("transformers")
            gate.update(version=version)
            click.echo(
                f"gate: installing {dist}=={version}, "
                + (
                    f"transformers=={transformers} (release with --no-deps)"
                    if transformers
                    else "transformers from its pin"
                )
            )
            py, pip, build = make_env(venv, base_site)
            install(py, pip, build, dist, version, transformers)
        except InstallError as e:
            install_error = str(e)
        t_install = time.perf_counter() - t0
        if install_error is None:
            gate["installed"] = installed_versions(py)
            click.echo(f"gate: installed in {t_install:.0f} s; running verify-parity on the tiny fixtures")
            rc, child_err = run_child(py, report_dir, extra_args or [], work)
        outcome = classify(report_dir, install_error, rc)
        if outcome["outcome"] == "error" and child_err:
            outcome["stderr_tail"] = child_err.splitlines()[-20:]
        gate.update(outcome)
        gate.update(
            passed=outcome["outcome"] == "pass",
            layered_over=base_site,
            python=platform.python_version(),
            seconds={"install": round(t_install, 1), "total": round(time.perf_counter() - t0, 1)},
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        (report_dir / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
        _echo_outcome(gate, report_dir)
        return EXIT_CODES[outcome["outcome"]]
    finally:
        if keep_venv is None:
            shutil.rmtree(work, ignore_errors=True)


def _echo_outcome(gate: dict, report_dir: Path) -> None:
    v = gate.get("installed") or {}
    what = f"{gate['distribution']} {gate.get('version', '?')}"
    if v:
        what += f" (transformers {v.get('transformers')}, torch {v.get('torch')})"
    for line in console_lines(gate):
        click.echo(line)
    click.echo(f"gate: {what}: {gate['outcome']} in {gate['seconds']['total']:.0f} s")
    files = [report_dir / "gate.json"] + [
        report_dir / n for n in ("parity.md", "parity.json") if (report_dir / n).is_file()
    ]
    click.echo("report: " + ", ".join(map(str, files)))
