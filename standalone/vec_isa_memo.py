"""Inductor's CPU vector-ISA probe, remembered on disk between processes.

Before the first C++ kernel of a process, inductor (torch 2.9) checks every vector ISA the CPU
advertises: it builds a tiny kernel per ISA (the binary is cached on disk) and then loads it in a
fresh Python that imports torch, to see it does not crash (``VecISA.check_build``). Those are
three subprocesses on an AVX-512 CPU (AVX-512, its BF16 kernel, AVX2), more with AMX: 6.6-8.8 s of
every process start that compiles, even when every graph comes from the compile cache (measured
on the tiny fixture, 2-core AMD EPYC: 17.5 s warm-up of which 8.8 s was this probe).

The answer depends only on the kernel's source, the compiler flags, the compiler, torch and the
CPU, so a passed check is remembered as an empty marker file whose name hashes all of them;
a later process with the same key skips the subprocess. Only passes are remembered: a failed
or interrupted check runs again next time, so a transient failure never pins a slower ISA.
The markers live in one directory per user ($Q3TTS_VEC_ISA_MEMO, else
$XDG_CACHE_HOME/q3tts/vec-isa), not in a compile cache: a new compile cache directory (a test's,
a deployment's) still skips the probe.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from pathlib import Path

MEMO_ENV = "Q3TTS_VEC_ISA_MEMO"


def memo_dir() -> Path:
    """Where passed checks are remembered: $Q3TTS_VEC_ISA_MEMO, else $XDG_CACHE_HOME/q3tts/vec-isa."""
    if os.environ.get(MEMO_ENV):
        return Path(os.environ[MEMO_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "q3tts" / "vec-isa").absolute()


@functools.cache
def cpu_flags() -> str:
    """The CPU's model and feature flags as the kernel reports them (first processor); read once
    per process (inductor checks three to five ISAs at a start, each asking)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "cpu model")
    lines = []
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough: every core of a machine reports the same
        if line.split(":")[0].strip() in wanted:
            lines.append(line)
    return "\n".join(lines)


def _memo_check_build(original, memo_dir: Path, fingerprint):
    def check_build(self, code: str) -> bool:
        key_text = "\n".join((code, fingerprint(self._arch_flags), cpu_flags(), platform.machine()))
        marker = memo_dir / hashlib.sha256(key_text.encode()).hexdigest()
        if marker.is_file():
            return True
        passed = original(self, code)
        if passed:
            try:
                memo_dir.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:
                pass  # a read-only cache only costs the next process the check
        return passed

    check_build.q3tts_memo_dir = memo_dir
    return check_build


def remember_vec_isa_checks(directory: str | os.PathLike | None = None) -> None:
    """Make inductor's ISA checks consult markers in ``directory`` (default memo_dir();
    process-wide, the last directory given wins). Does nothing on a torch without the probe this
    was written against."""
    try:
        from torch._inductor import cpu_vec_isa
    except ImportError:
        return
    vec_isa = getattr(cpu_vec_isa, "VecISA", None)
    fingerprint = getattr(cpu_vec_isa, "_get_isa_dry_compile_fingerprint", None)
    current = getattr(vec_isa, "check_build", None)
    if current is None or fingerprint is None:
        return
    original = getattr(current, "q3tts_original", current)
    memo = _memo_check_build(original, Path(directory) if directory is not None else memo_dir(), fingerprint)
    memo.q3tts_original = original
    vec_isa.check_build = memo
