"""Mixed precision (standalone/precision.py): the split is applied by the converter and the loader,
recorded in the weight metadata, refused when misnamed, and buys what it is for: an fp32 codec, an
fp32 residual stream that survives a trained model's outlier channels, and forwards closer to fp32
than plain half precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from q3tts.convert import convert_checkpoint
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.checkpoint import CheckpointError, read_header
from q3tts.standalone.conversion import ConversionError
from q3tts.standalone.precision import MIXED, Precision, parse_mode, stored_precision

HALF = {torch.bfloat16, torch.float16}


@pytest.fixture(scope="module")
def mixed_dirs(checkpoints, tmp_path_factory):
    """{mode: standalone dir converted with --dtype mode} from the base fixture (it has every part)."""
    root = tmp_path_factory.mktemp("mixed")
    up, _ = checkpoints["base"]
    out = {}
    for name, precision in MIXED.items():
        out[name] = root / name
        convert_checkpoint(up, out[name], dtype=precision)
    return out


def _header_dtypes(path) -> tuple[dict[str, torch.dtype], dict[str, str]]:
    infos, meta = read_header(path)
    return {n: i.dtype for n, i in infos.items()}, meta


@pytest.mark.parametrize("mode", list(MIXED))
def test_conversion_stores_the_split_and_names_it(mixed_dirs, mode):
    precision = MIXED[mode]
    model, meta = _header_dtypes(mixed_dirs[mode] / "model.safetensors")
    codec, codec_meta = _header_dtypes(mixed_dirs[mode] / "speech_tokenizer" / "model.safetensors")
    assert meta["precision"] == mode and codec_meta["precision"] == mode
    assert {n: d for n, d in model.items()} == {n: precision.dtype_for(n) for n in model}
    assert set(codec.values()) == {torch.float32}  # the whole speech tokenizer (decoder and encoder)
    # The decisions, named: linears and embeddings half; norms, heads, speaker encoder fp32.
    assert model["talker.decoder.layers.0.attn.wqkv.weight"] == precision.half
    assert model["code_predictor.decoder.layers.0.mlp.w_gate_up.weight"] == precision.half
    assert model["talker.text_embedding.weight"] == precision.half
    for fp32 in ("talker.decoder.norm.weight", "talker.codec_head.weight", "code_predictor.heads"):
        assert model[fp32] == torch.float32, fp32
    assert all(d == torch.float32 for n, d in model.items() if n.startswith("speaker_encoder."))
    down = model["code_predictor.decoder.layers.0.mlp.w_down.weight"]
    assert down == (torch.float32 if mode == "fp16-mixed" else torch.bfloat16)


@pytest.mark.parametrize("mode", list(MIXED))
def test_loader_restores_the_split(mixed_dirs, checkpoints, mode):
    stored = Qwen3TTS.from_pretrained(mixed_dirs[mode])  # keep: the metadata names the mode
    cast = Qwen3TTS.from_pretrained(checkpoints["base"][1], dtype=mode)  # a plain fp32 checkpoint, cast at load
    for model in (stored, cast):
        assert model.precision is MIXED[mode] and model.dtype == torch.float32
        for name, t in model.state_dict().items():
            assert t.dtype == MIXED[mode].dtype_for(name), name
        assert {p.dtype for p in model.codec.parameters()} == {torch.float32}
        ids = torch.tensor([[1, 2, 3]])
        assert model.talker.embed_text(ids).dtype == torch.float32
        assert model.code_predictor.embed(1, ids).dtype == torch.float32
    for (name, a), b in zip(stored.state_dict().items(), cast.state_dict().values()):
        assert torch.equal(a, b), name  # conversion-time and load-time casts agree bit for bit


def test_plain_dtype_over_a_mixed_checkpoint_is_the_plain_mode(mixed_dirs):
    model = Qwen3TTS.from_pretrained(mixed_dirs["bf16-mixed"], dtype=torch.bfloat16)
    assert model.precision is None
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.bfloat16}


def test_stored_precision_round_trips_and_refuses_unknown_names(mixed_dirs, checkpoints, tmp_path):
    assert stored_precision(checkpoints["base"][1]) is None
    for mode, directory in mixed_dirs.items():
        assert stored_precision(directory) is MIXED[mode]
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(mixed_dirs["bf16-mixed"], bad)
    path = bad / "model.safetensors"
    data = path.read_bytes()
    assert data.count(b'"precision":"bf16-mixed"') == 1
    path.write_bytes(data.replace(b'"precision":"bf16-mixed"', b'"precision":"bf12-mixed"'))  # same size
    with pytest.raises(CheckpointError, match=r"names precision 'bf12-mixed', not one of bf16-mixed, fp16-mixed"):
        Qwen3TTS.from_pretrained(bad)


def test_bad_mode_names(checkpoints, tmp_path):
    with pytest.raises(ValueError, match=r"dtype 'bf8-mixed' is not a precision mode; use one of fp32, .*fp16-mixed"):
        Qwen3TTS.from_pretrained(checkpoints["base"][1], dtype="bf8-mixed")
    with pytest.raises(ValueError, match=r"dtype 'int8' is not one of keep, fp32, bf16, fp16, bf16-mixed"):
        parse_mode("int8")
    with pytest.raises(ConversionError, match=r"--dtype bf16-mixed applies to the standalone layout only"):
        convert_checkpoint(checkpoints["base"][1], tmp_path / "up", dtype=MIXED["bf16-mixed"], to="upstream")
    from q3tts.convert.cli import main

    result = CliRunner().invoke(main, [str(checkpoints["base"][0]), str(tmp_path / "x"), "--dtype", "bf16-mix"])
    assert result.exit_code == 2 and "'bf16-mix' is not one of" in result.output
    with pytest.raises(ValueError, match=r"the fast path runs the plain modes only; this model is fp16-mixed"):
        Qwen3TTS.from_pretrained(checkpoints["base"][1], dtype="fp16-mixed", fast=True)


def test_convert_cli_writes_a_mixed_checkpoint(checkpoints, tmp_path):
    from q3tts.convert.cli import main

    dst = tmp_path / "m"
    result = CliRunner().invoke(main, [str(checkpoints["custom_voice"][0]), str(dst), "--dtype", "fp16-mixed"])
    assert result.exit_code == 0, result.output
    assert stored_precision(dst) is MIXED["fp16-mixed"]
    assert Qwen3TTS.from_pretrained(dst).precision is MIXED["fp16-mixed"]


# --- what the fp32 parts buy ------------------------------------------------------------------


def _snr(ref, got) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got.astype(np.float64)) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


@pytest.mark.parametrize("half", ["bf16", "fp16"])
def test_mixed_audio_is_the_fp32_codec(checkpoints, half):
    """Plain half precision decodes in half (measured at 0.6B: 16 dB bf16, 25 dB fp16); a mixed mode's
    codec is fp32, so the same codes give fp32's audio exactly."""
    st = checkpoints["base"][1]
    codes = torch.randint(0, 16, (40, 4), generator=torch.Generator().manual_seed(3))
    ref = Qwen3TTS.from_pretrained(st, dtype=torch.float32).decode_codes([codes])[0][0]
    plain = Qwen3TTS.from_pretrained(st, dtype=half).decode_codes([codes])[0][0]
    mixed = Qwen3TTS.from_pretrained(st, dtype=f"{half}-mixed").decode_codes([codes])[0][0]
    assert np.array_equal(mixed, ref)
    assert _snr(ref, plain) < 60  # the plain mode really is lossy here: the comparison can fail


def _plant_outlier(model, talker_hidden, codes, scale: float = 2e4) -> None:
    """Give code-predictor layer 0's down projection one output channel that reaches ~1e5 (a trained
    model's "massive activation"): row 0 of w_down = scale * sign of the MLP intermediate of the
    fp32 model at the last position, so the channel is the sum of |intermediate| * scale."""
    seen = []
    mlp = model.code_predictor.decoder.layers[0].mlp
    handle = mlp.w_down.register_forward_pre_hook(lambda m, i: seen.append(i[0][0, -1].float()))
    model.code_predictor.teacher_forced_logits(talker_hidden, codes, model.talker.codec_embedding)
    handle.remove()
    return torch.sign(seen[0]) * scale


@torch.no_grad()
def test_fp16_mixed_survives_an_outlier_channel_that_breaks_plain_fp16(checkpoints):
    """The reported failure: a residual channel past 65504 in the code predictor. Plain fp16 turns it
    into inf (then NaN logits); fp16-mixed writes it with an fp32 down projection into an fp32
    residual stream and stays within 1% of fp32. bf16-mixed has fp32's range everywhere."""
    st = checkpoints["custom_voice"][1]
    models = {m: Qwen3TTS.from_pretrained(st, dtype=m) for m in ("fp32", "fp16", "fp16-mixed", "bf16-mixed")}
    # fp16-mixed with half down projections (bf16-mixed's split in fp16): the fp32 down projection is
    # what saves fp16-mixed, so without it the same outlier must break it (the test's own sharpness).
    half_down = Precision("fp16, down projections half", torch.float16, MIXED["bf16-mixed"].half_patterns)
    models["fp16 half down"] = Qwen3TTS.from_pretrained(st, dtype=half_down)
    ref_model = models["fp32"]
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(1, ref_model.config.talker.transformer.hidden_size, generator=g)
    codes = torch.randint(0, ref_model.config.talker.code_predictor.vocab_size, (1, 4), generator=g)
    row = _plant_outlier(ref_model, hidden, codes)
    logits, peak = {}, {}
    for mode, model in models.items():
        model.code_predictor.decoder.layers[0].mlp.w_down.weight[0] = row.to(
            model.code_predictor.decoder.layers[0].mlp.w_down.weight.dtype
        )
        seen = []
        handle = model.code_predictor.decoder.layers[0].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o))
        logits[mode] = model.code_predictor.teacher_forced_logits(
            hidden.to(model.dtype), codes, model.talker.codec_embedding
        ).float()
        handle.remove()
        peak[mode] = float(seen[0].float().abs().max())
    assert peak["fp32"] > 65504  # the planted channel really overflows fp16
    assert not bool(torch.isfinite(logits["fp16"]).all())
    assert not bool(torch.isfinite(logits["fp16 half down"]).all())
    for mode in ("fp16-mixed", "bf16-mixed"):
        assert bool(torch.isfinite(logits[mode]).all()), mode
        rel = float((logits[mode] - logits["fp32"]).abs().max() / logits["fp32"].abs().max())
        assert rel < 2e-2, (mode, rel)


@pytest.mark.parametrize("half", ["bf16", "fp16"])
@torch.inference_mode()
def test_mixed_forward_is_closer_to_fp32_than_plain(checkpoints, half):
    """Talker logits and code-predictor logits (fp32 residual stream, norms and heads): measured at
    0.6B 2.2-2.6x closer to fp32 than plain half (reports/mixed-precision-0.6B.md)."""
    st = checkpoints["custom_voice"][1]
    g = torch.Generator().manual_seed(7)
    models = {m: Qwen3TTS.from_pretrained(st, dtype=m) for m in ("fp32", half, f"{half}-mixed")}
    cfg = models["fp32"].config.talker
    text = torch.randint(0, cfg.text_vocab_size, (2, 24), generator=g)
    codec = torch.randint(0, cfg.vocab_size, (2, 24), generator=g)
    codes = torch.randint(0, cfg.code_predictor.vocab_size, (2, cfg.num_code_groups), generator=g)
    out = {}
    for mode, m in models.items():
        x = m.talker.embed_text(text) + m.talker.codec_embedding(codec)
        hidden, logits = m.talker(x)
        cp = m.code_predictor.teacher_forced_logits(hidden[:, -1], codes, m.talker.codec_embedding)
        out[mode] = (logits.float(), cp.float())
    for i, what in enumerate(("talker logits", "code predictor logits")):
        ref = out["fp32"][i]
        err = {m: float((out[m][i] - ref).abs().max()) for m in (half, f"{half}-mixed")}
        assert err[f"{half}-mixed"] < err[half], (what, err)
