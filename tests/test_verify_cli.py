"""verify-parity as a user runs it: on a checkpoint directory, on a given converted directory, and
the exit code when parity breaks."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from q3tts.verify.cli import main as verify_cli


def _run(*args):
    r = CliRunner().invoke(verify_cli, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.mark.reference
def test_on_an_upstream_directory(checkpoints, tmp_path):
    code, out = _run(
        checkpoints["voice_design"][0],
        "--dtype",
        "fp32",
        "--seeds",
        "0",
        "--frames",
        "6",
        "--report-dir",
        tmp_path / "r",
    )
    assert code == 0, out
    assert "verdict: PASS" in out
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert report["schema_version"] == 1 and report["verdict"] == "PASS"
    run = report["runs"][0]
    assert run["dtype"] == "fp32" and run["config"]["tts_model_type"] == "voice_design"
    kinds = {c["kind"] for c in run["cases"]}
    assert kinds == {"forward", "generation", "audio", "streaming"}
    assert run["seconds_upstream"] > 0 and run["seconds_standalone"] > 0
    assert report["versions"]["qwen-tts"] == "0.1.1" and report["versions"]["transformers"] == "4.57.3"


@pytest.mark.reference
def test_broken_standalone_fails_with_exit_1_and_names_the_layer(checkpoints, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["custom_voice"][1], broken)
    sd = load_file(str(broken / "model.safetensors"))
    a, b = "talker.decoder.layers.1.attn_norm.weight", "talker.decoder.layers.1.mlp_norm.weight"
    sd[a], sd[b] = sd[b].clone(), sd[a].clone()
    save_file(sd, str(broken / "model.safetensors"))
    (broken / "manifest.json").unlink()  # a hand-edited checkpoint: no manifest vouches for it
    code, out = _run(
        checkpoints["custom_voice"][0],
        "--standalone",
        broken,
        "--dtype",
        "fp32",
        "--seeds",
        "0",
        "--frames",
        "6",
        "--report-dir",
        tmp_path / "r",
    )
    assert code == 1, out
    assert "verdict: FAIL" in out
    md = (tmp_path / "r" / "parity.md").read_text()
    assert md.startswith("# Parity: FAIL") and "## Failures" in md and "talker.layers.1" in md
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    failed = [c for c in report["runs"][0]["cases"] if not c["passed"]]
    assert {c["first_bad_layer"] for c in failed if c["kind"] == "forward"} == {"talker.layers.1"}


def test_bad_source_is_one_line_and_exit_2(tmp_path):
    code, out = _run(tmp_path / "does-not-exist", "--report-dir", tmp_path / "r")
    assert code == 2 and "verify-parity: error:" in out and "Traceback" not in out


def test_codec_weights_are_accounted_for_too(checkpoints, tmp_path):
    from q3tts.convert import ConversionError, convert_checkpoint

    up = tmp_path / "up"
    shutil.copytree(checkpoints["base"][0], up)
    path = up / "speech_tokenizer" / "model.safetensors"
    sd = load_file(str(path))
    sd.pop("decoder.pre_transformer.layers.0.mlp.up_proj.weight")
    save_file(sd, str(path))
    with pytest.raises(
        ConversionError, match=r"missing tensor\(s\) \['decoder.pre_transformer.layers.0.mlp.up_proj.weight'\]"
    ):
        convert_checkpoint(up, tmp_path / "out")
    assert not (tmp_path / "out").exists()
