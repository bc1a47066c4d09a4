"""Training forward: upstream-recipe parity (loss, logits, every gradient), the teacher-forcing
consistency check of both recipes, the batch layout, and the training faults."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.standalone.training import (
    RECIPES,
    TrainingItem,
    collate,
    training_forward,
)
from q3tts.verify.cases.forward import load_upstream, speech_like_waveform
from q3tts.verify.cases.training import (
    greedy_generate_recorded,
    make_items,
    run_consistency_check,
    run_upstream_recipe_parity,
    standalone_speaker_embedding,
    write_training_fixture,
)
from q3tts.verify.faults.training import TRAINING_FAULTS

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


@pytest.fixture(scope="module")
def train_dirs(tmp_path_factory):
    return write_training_fixture(tmp_path_factory.mktemp("train"))


_models: dict = {}


@pytest.fixture(scope="module")
def pair(train_dirs):
    def load(dtype):
        if dtype not in _models:
            up_dir, st_dir = train_dirs
            _models[dtype] = (load_upstream(up_dir, dtype), Qwen3TTS.from_pretrained(st_dir, dtype=dtype))
        return _models[dtype]

    yield load
    _models.clear()


@pytest.fixture(scope="module")
def record(pair):
    """One greedy generation with its logits recorded, shared by the consistency tests."""
    _, st = pair(torch.float32)
    spk = standalone_speaker_embedding(st, speech_like_waveform(0), 1)[0]
    tok = st.text_tokenizer
    ids = torch.tensor([tok.encode(tok.assistant_text("hello there"))])
    return greedy_generate_recorded(st, ids, spk), spk


WAV = speech_like_waveform(3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_upstream_recipe_parity(pair, dtype):
    up, st = pair(dtype)
    res = run_upstream_recipe_parity(up, st, make_items(st, seed=1), WAV, dtype)
    bad = [f"{c.case}: {c.max_abs:.3g} > {c.bound:.3g}" for c in res.failing()]
    assert res.passed, f"missing grads {res.missing_gradients}; failing: {bad[:8]}"
    names = {c.case for c in res.comparisons}
    # every trained upstream parameter was compared: talker layers, embeddings, head, code predictor
    n_grad = sum(1 for n in names if n.startswith("grad.") and not n.startswith("grad_group"))
    trainable = sum(
        1 for n, p in up.named_parameters() if not n.startswith(("speaker_encoder.", "talker.text_projection."))
    )
    assert n_grad == trainable
    # measured: bit-identical in both dtypes on this fixture (see TRAINING_TOLERANCES)
    assert max(c.max_abs for c in res.comparisons) == 0.0


def test_consistency_aligned_passes_upstream_fails(pair, record):
    _, st = pair(torch.float32)
    rec, spk = record
    assert rec.codes.shape[0] >= 3
    aligned = run_consistency_check(st, "aligned", record=rec, speaker_embedding=spk)
    assert aligned.passed, aligned.summary()
    # measured 5.2e-6 / 4.0e-6 (talker / code predictor) at logit scale 17
    assert aligned.talker_max_abs < 2e-5 and max(aligned.code_predictor_max_abs.values()) < 2e-5
    upstream = run_consistency_check(st, "upstream", record=rec, speaker_embedding=spk)
    assert not upstream.passed
    assert upstream.talker_first_bad == 0 and upstream.talker_max_abs > 1.0
    assert upstream.untrained_groups == [1]
    assert upstream.code_predictor_first_bad == (0, 1)
    assert "NOT consistent" in upstream.summary()


def test_gradients_reach_what_each_recipe_trains(pair):
    _, st = pair(torch.float32)
    items = make_items(st, seed=2)
    batch = collate(items, st.config)
    spk = standalone_speaker_embedding(st, WAV, len(items))
    keys_before = list(st.state_dict())
    n_before = sum(p.numel() for p in st.parameters())
    st.train()
    try:
        for name, projected in (("aligned", True), ("upstream", False)):
            st.zero_grad(set_to_none=True)
            out = training_forward(st, batch, spk, recipe=name)
            out.loss.backward()
            assert torch.isfinite(out.loss)
            got = {n for n, p in st.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            assert ("talker.text_projection.fc1.weight" in got) == projected
            assert "code_predictor.heads" in got and "talker.decoder.layers.0.attn.wqkv.weight" in got
            assert not any(n.startswith("speaker_encoder.") for n in got)
    finally:
        st.zero_grad(set_to_none=True)
        st.eval()
    assert list(st.state_dict()) == keys_before and sum(p.numel() for p in st.parameters()) == n_before


def test_bf16_autocast_and_gradient_checkpointing(pair):
    _, st = pair(torch.float32)
    items = make_items(st, seed=4)
    batch = collate(items, st.config)
    spk = standalone_speaker_embedding(st, WAV, len(items))
    st.train()
    grads = []
    try:
        for ckpt in (False, True):
            st.zero_grad(set_to_none=True)
            out = training_forward(st, batch, spk, gradient_checkpointing=ckpt)
            out.loss.backward()
            grads.append({n: p.grad.clone() for n, p in st.named_parameters() if p.grad is not None})
        st.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = training_forward(st, batch, spk)
        assert out.talker_logits.dtype == torch.bfloat16
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in st.parameters() if p.grad is not None)
    finally:
        st.zero_grad(set_to_none=True)
        st.eval()
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:  # recomputation replays the same kernels
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=0, atol=0)
    assert not any("forward" in vars(layer) for layer in st.talker.decoder.layers)


def test_collate_layout(pair):
    """Upstream dataset.py's layout (upstream-encoder-finetune.md B.3), pinned position by position.
    (Checked identical to dataset.py@022e286's collate_fn on random 16-group batches.)"""
    _, st = pair(torch.float32)
    cfg, t = st.config, st.config.talker
    text = torch.tensor([301, 5, 6, 100, 101])  # role + N = 2 text tokens
    codes = torch.arange(3 * t.num_code_groups).view(3, t.num_code_groups) % 16
    short = TrainingItem(torch.tensor([301, 5, 6, 100]), codes[:1])
    b = collate([TrainingItem(text, codes), short], cfg)
    n, frames = 2, 3
    assert b.input_ids.shape == (2, n + frames + 11, 2)
    assert b.input_ids[0, :, 0].tolist() == [301, 5, 6] + [cfg.tts_pad_token_id] * 4 + [
        cfg.tts_bos_token_id,
        100,
        101,
        cfg.tts_eos_token_id,
    ] + [cfg.tts_pad_token_id] * (frames + 2)
    assert b.input_ids[0, :, 1].tolist() == [
        0,
        0,
        0,
        t.codec_nothink_id,
        t.codec_think_bos_id,
        t.codec_think_eos_id,
        0,
        t.codec_pad_id,
        t.codec_pad_id,
        t.codec_pad_id,
        t.codec_pad_id,
        t.codec_bos_id,
    ] + codes[:, 0].tolist() + [t.codec_eos_token_id]
    p0 = 10 + n
    assert b.codec_mask[0].nonzero().flatten().tolist() == [p0, p0 + 1, p0 + 2]
    assert torch.equal(b.codec_ids[0, p0 : p0 + 3], codes)
    assert b.codec_0_labels[0].tolist() == [-100] * p0 + codes[:, 0].tolist() + [t.codec_eos_token_id]
    assert b.codec_embedding_mask[0, :, 0].tolist() == [False] * 3 + [True] * 3 + [False] + [True] * (p0 + frames - 6)
    assert b.text_embedding_mask[0].all() and b.attention_mask[0].all()
    # the shorter item is right-padded
    assert b.attention_mask[1].tolist() == [1] * 13 + [0] * 3
    assert b.codec_0_labels[1, 11:].tolist() == [0, t.codec_eos_token_id, -100, -100, -100]
    assert not b.text_embedding_mask[1, 13:].any() and not b.codec_embedding_mask[1, 13:].any()


def test_upstream_recipe_refuses_text_width_mismatch(checkpoints):
    st = Qwen3TTS.from_pretrained(checkpoints["base"][1])  # text width 24, talker width 32, like 0.6B
    items = [
        TrainingItem(torch.tensor([301, 5, 6, 100]), torch.zeros(2, st.config.talker.num_code_groups, dtype=torch.long))
    ]
    spk = torch.zeros(1, st.config.talker.transformer.hidden_size)
    with pytest.raises(ValueError, match="recipe 'upstream' adds raw text embeddings"):
        training_forward(st, collate(items, st.config), spk, recipe="upstream")
    assert torch.isfinite(training_forward(st, collate(items, st.config), spk).loss)  # aligned works there
    with pytest.raises(ValueError, match="unknown recipe"):
        training_forward(st, collate(items, st.config), spk, recipe="sft")


@pytest.mark.parametrize("fault", TRAINING_FAULTS, ids=lambda f: f.name)
def test_training_fault_is_caught(pair, record, fault):
    up, st = pair(torch.float32)
    rec, spk = record
    items = make_items(st, seed=1)
    with fault.inject():
        parity = run_upstream_recipe_parity(up, st, items, WAV, torch.float32)
        consistency = run_consistency_check(st, "aligned", record=rec, speaker_embedding=spk)
    failing = {c.case for c in parity.failing()}
    assert not parity.passed and set(fault.parity_cases) <= failing, (fault.name, sorted(failing)[:10])
    assert not consistency.passed, (fault.name, consistency.summary())
    # and the fault is gone afterwards
    assert run_upstream_recipe_parity(up, st, items, WAV, torch.float32).passed
    assert RECIPES["aligned"].code_predictor_weight == 0.3


def test_upstreams_batch_is_laid_out_independently_of_the_collate_under_test(pair):
    """The verifier's transcription of dataset.py equals the standalone collate field for field on a
    padded batch, and a planted collate bug (the EOS target dropped) fails the training parity:
    the upstream side no longer shares the code it checks."""
    from q3tts.standalone.training import collate as real_collate
    from q3tts.verify.cases import training as training_cases
    from q3tts.verify.cases.training_batch import dataset_batch

    up, st = pair(torch.float32)
    items = make_items(st, seed=1)
    ours, theirs = real_collate(items, st.config), dataset_batch(items, up.config)
    for f in dataclasses.fields(ours):
        assert torch.equal(getattr(ours, f.name), getattr(theirs, f.name)), f.name

    def collate_without_eos_target(items_, config):
        batch = real_collate(items_, config)
        for i, positions in enumerate(batch.frame_positions):
            batch.codec_0_labels[i, int(positions[-1]) + 1] = -100
        return batch

    clean = run_upstream_recipe_parity(up, st, items, WAV, torch.float32)
    assert clean.passed
    original = training_cases.collate
    training_cases.collate = collate_without_eos_target
    try:
        broken = run_upstream_recipe_parity(up, st, items, WAV, torch.float32)
    finally:
        training_cases.collate = original
    assert not broken.passed and "train.talker_loss" in {c.case for c in broken.failing()}
