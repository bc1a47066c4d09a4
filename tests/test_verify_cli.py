"""verify-parity as a user runs it: on a checkpoint directory, on a given converted directory, and
the exit code when parity breaks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
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


def _short_run(src, report_dir, *extra):
    return _run(src, "--dtype", "fp32", "--seeds", "0", "--no-sensitivity", "--report-dir", report_dir, *extra)


@pytest.mark.reference
def test_eos_suppression_off_by_one_is_a_fail_verdict_naming_cases_not_exit_2(checkpoints, tmp_path):
    """The standalone samples a special id upstream can never draw; every later step on both sides
    (upstream's codec fed those codes included) must end as failed cases, not a crashed run."""
    from q3tts.verify.faults.catalogue import CATALOGUE

    fault = next(f for f in CATALOGUE if f.name == "suppression_off_by_one")
    with fault.inject(None):  # a module seam: q3tts.standalone.generation.suppress_mask_for
        code, out = _short_run(checkpoints["voice_design"][0], tmp_path / "r", "--frames", "8")
    assert code == 1, out
    assert "verdict: FAIL" in out
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    failed = [c["case"] for c in report["runs"][0]["cases"] if not c["passed"]]
    assert failed and all(c.startswith(("generation.", "streaming.")) for c in failed), failed
    assert all(c in (tmp_path / "r" / "parity.md").read_text() for c in failed[:3])


def _loss_mask_one_late(original):
    def labels(labels, recipe):
        import q3tts.standalone.training as training

        out = original(labels, recipe).clone()
        first = (out != training.IGNORE_INDEX).float().argmax(dim=1)  # each row's first scored position
        out[torch.arange(out.shape[0]), first] = training.IGNORE_INDEX
        return out

    return labels


def _one_frame_short(original):
    def hidden(hidden, codec_mask, recipe):
        mask = codec_mask.clone()
        for row in mask:
            row[row.nonzero().flatten()[-1]] = False  # the last frame dropped: shapes no longer match
        return original(hidden, mask, recipe)

    return hidden


@pytest.mark.reference
@pytest.mark.parametrize(
    "target, make, named",
    [
        ("talker_labels", _loss_mask_one_late, "train.talker_loss"),
        ("code_predictor_hidden", _one_frame_short, "raised in the standalone: RuntimeError"),
    ],
)
def test_a_training_bug_is_a_fail_verdict_naming_it_not_exit_2(checkpoints, tmp_path, monkeypatch, target, make, named):
    """A loss mask one position late fails the training comparisons by their numbers; a frame
    dropped from the code predictor's input makes the standalone's step raise, which fails the
    section with the exception named. Either way: exit 1, verdict FAIL, the run's cases reported."""
    import q3tts.standalone.training as training

    monkeypatch.setattr(training, target, make(getattr(training, target)))
    code, out = _short_run(checkpoints["base"][0], tmp_path / "r", "--frames", "2", "--training")
    assert code == 1, out
    assert "verdict: FAIL" in out and "training FAILS" in out, out
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert report["summary"]["failed"] == 0 and not report["training"]["passed"]
    assert named in (tmp_path / "r" / "parity.md").read_text()
