"""The remembered ISA probe (standalone/vec_isa_memo.py): a pass is remembered under a key of
everything the check depends on, a failure never is, and installing it twice wraps once."""

from __future__ import annotations

import pytest
from torch._inductor import cpu_vec_isa

from q3tts.standalone.vec_isa_memo import _memo_check_build, remember_vec_isa_checks


class CountingCheck:
    """Stands in for inductor's subprocess check: counts its calls, answers ``result``."""

    def __init__(self, result: bool):
        self.result, self.calls = result, 0

    def __call__(self, isa, code: str) -> bool:
        self.calls += 1
        return self.result


def _fingerprint(arch_flags: str) -> str:
    return f"compiler=1 flags={arch_flags}"


@pytest.fixture
def avx2():
    return cpu_vec_isa.VecAVX2()


def test_a_pass_is_remembered_and_the_next_call_skips_the_check(tmp_path, avx2):
    real = CountingCheck(True)
    check = _memo_check_build(real, tmp_path, _fingerprint)
    assert check(avx2, "kernel A") and real.calls == 1
    assert check(avx2, "kernel A") and real.calls == 1  # the marker answered
    assert check(avx2, "kernel B") and real.calls == 2  # other source, other key
    assert len(list(tmp_path.iterdir())) == 2


def test_a_failure_is_not_remembered(tmp_path, avx2):
    real = CountingCheck(False)
    check = _memo_check_build(real, tmp_path, _fingerprint)
    assert not check(avx2, "kernel A") and not check(avx2, "kernel A")
    assert real.calls == 2 and not list(tmp_path.iterdir())


def test_the_key_covers_compiler_flags_and_compiler(tmp_path, avx2, monkeypatch):
    real = CountingCheck(True)
    check = _memo_check_build(real, tmp_path, _fingerprint)
    check(avx2, "kernel A")
    monkeypatch.setattr(avx2, "_arch_flags", avx2._arch_flags + " -mavx512bf16")
    check(avx2, "kernel A")
    other_compiler = _memo_check_build(real, tmp_path, lambda flags: f"compiler=2 flags={flags}")
    other_compiler(avx2, "kernel A")
    assert real.calls == 3


def test_cpu_flags_are_part_of_the_key(tmp_path, avx2, monkeypatch):
    from q3tts.standalone import vec_isa_memo

    real = CountingCheck(True)
    check = _memo_check_build(real, tmp_path, _fingerprint)
    check(avx2, "kernel A")
    monkeypatch.setattr(vec_isa_memo, "cpu_flags", lambda: "flags: sse2")
    check(avx2, "kernel A")
    assert real.calls == 2


def test_installing_twice_wraps_inductors_check_once(tmp_path, monkeypatch):
    # inductor's own check, even when a fast engine in this process already installed the memo
    installed = cpu_vec_isa.VecISA.check_build
    original = getattr(installed, "q3tts_original", installed)
    monkeypatch.setattr(cpu_vec_isa.VecISA, "check_build", original)
    remember_vec_isa_checks(tmp_path / "a")
    remember_vec_isa_checks(tmp_path / "b")
    installed = cpu_vec_isa.VecISA.check_build
    assert installed.q3tts_original is original
    assert installed.q3tts_memo_dir == tmp_path / "b"


def test_the_markers_live_outside_any_compile_cache(tmp_path, monkeypatch):
    from q3tts.standalone.vec_isa_memo import memo_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.delenv("Q3TTS_VEC_ISA_MEMO", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert memo_dir() == tmp_path / "xdg" / "q3tts" / "vec-isa"
    monkeypatch.setenv("Q3TTS_VEC_ISA_MEMO", str(tmp_path / "memo"))
    assert memo_dir() == tmp_path / "memo"


def test_an_unwritable_memo_still_answers(tmp_path, avx2):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the memo directory should be: mkdir fails
    real = CountingCheck(True)
    assert _memo_check_build(real, blocker / "memo", _fingerprint)(avx2, "kernel A")
