"""verify-parity --engine qwentts.cpp: reports on each model type and quantisation, exits with an
install hint without the binding, and catches every planted converter fault by name."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip(
    "gguf", reason="convert-ckpt --to gguf needs the gguf package: pip install 'qwen3-tts-standalone[gguf]'"
)

from click.testing import CliRunner  # noqa: E402

from q3tts.verify.cli import main  # noqa: E402
from q3tts.verify.engines.gguf import code_agreement  # noqa: E402

pytestmark = pytest.mark.reference  # the engine fixtures are built from upstream's modules
NO_BINDING = "qwentts.cpp binding not installed: pip install 'qwen3-tts-standalone[peers]'"


def test_code_agreement_separates_upstreams_frame_cap_from_an_eos_difference():
    ref = np.arange(7 * 16).reshape(7, 16)
    eng = np.concatenate([ref, ref[:1]])
    # upstream returns max_new_tokens - 1 frames, the engine max_new_tokens: not a divergence
    r = code_agreement(ref, eng, max_new_tokens=8)
    assert r["first_divergence"] is None and r["identical_frames"] == 7 and "length_note" in r
    # the engine stopping early is an EOS decision that differs
    r = code_agreement(ref, eng[:5], max_new_tokens=8)
    assert r["first_divergence"] == {"frame": 5, "group": 0}
    bad = ref.copy()
    bad[3, 9] += 1
    assert code_agreement(ref, bad, 8)["first_divergence"] == {"frame": 3, "group": 9}


def test_engine_without_binding_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "qwentts_cpp_cpu", None)  # import fails as if not installed
    r = CliRunner().invoke(main, ["--engine", "qwentts.cpp", "--report-dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "pip install 'qwen3-tts-standalone[peers]'" in r.output
    r = CliRunner().invoke(main, ["--self-test", "--engine", "qwentts.cpp", "--report-dir", str(tmp_path)])
    assert r.exit_code == 2 and "[peers]" in r.output


def test_engine_rejects_unknown_quant(tmp_path):
    pytest.importorskip("qwentts_cpp_cpu", reason=NO_BINDING)
    r = CliRunner().invoke(main, ["--engine", "qwentts.cpp", "--quant", "Q4_K", "--report-dir", str(tmp_path)])
    assert r.exit_code != 0 and "--quant" in r.output


def test_verify_parity_engine_reports_on_each_model_type(tmp_path):
    pytest.importorskip("qwentts_cpp_cpu", reason=NO_BINDING)
    args = ["--engine", "qwentts.cpp", "--quant", "F32,Q8_0", "--frames", "6", "--report-dir", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "engine-parity.json").read_text())
    assert sorted((x["model_type"], x["quant"]) for x in rows) == sorted(
        (mt, q) for mt in ("base", "custom_voice", "voice_design") for q in ("F32", "Q8_0")
    )
    for x in rows:
        assert x["prompt_ids"]["identical"], x["prompt_ids"]
        assert x["codes"]["compared_frames"] > 0
        assert x["audio_from_engine_codes"]["samples"] > 0  # 16 groups and the released codec decode
        assert x["teacher_forced"]["group0_frame0"]["available"]
        assert x["audit"]["ok"], x["audit"]
        if x["quant"] == "F32":
            assert x["stages"]["first_bad"] is None, x["stages"]
            # residual codes are real argmaxes, not the engine's 0 at subtalker_top_k >= vocab
            assert x["codes"]["identical_frames"] > 0
    md = (tmp_path / "engine-parity.md").read_text()
    assert "| engine-voice_design | voice_design | Q8_0 |" in md


def test_engine_self_test_catches_and_names_every_converter_fault(tmp_path):
    pytest.importorskip("qwentts_cpp_cpu", reason=NO_BINDING)
    r = CliRunner().invoke(main, ["--self-test", "--engine", "qwentts.cpp", "--report-dir", str(tmp_path)])
    report = json.loads((tmp_path / "engine-faults.json").read_text())
    assert report["clean"] == [], report["clean"]
    assert {f["fault"] for f in report["faults"]} == {"swap_qk", "rope_flag", "special_token", "codebook_unnormalised"}
    for f in report["faults"]:
        assert f["caught"] and f["named"], f
    assert r.exit_code == 0, r.output
