"""The probes behind the goldens (verify/goldens.py): inputs, and what is kept of the outputs.

Both sides implement one small interface (`UpstreamSide`, `StandaloneSide`); every probe takes a
side, so the same inputs reach both, and `run_probes` returns ``{name: value}`` with the same names
on both sides. The standalone side uses only the runtime's public API. Only the upstream side
needs qwen_tts, and it is handed an already loaded upstream model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .fixtures import tiny_config
from .forward_parity import speech_like_waveform

MIN_FRAMES = 4  # a generation golden shorter than this would hardly test the decode loop


# --------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------


class UpstreamSide:
    """qwen-tts' Qwen3TTSModel wrapper (processor + model)."""

    def __init__(self, wrapper):
        self.wrapper, self.model = wrapper, wrapper.model

    def ids(self, text: str, kind: str) -> torch.Tensor:
        w = self.wrapper
        template = {"assistant": w._build_assistant_text, "ref": w._build_ref_text, "instruct": w._build_instruct_text}[
            kind
        ]
        return w._tokenize_texts([template(text)])[0]

    def talker_logits(self, text_ids, codec_ids, mask) -> torch.Tensor:
        t = self.model.talker
        x = t.text_projection(t.model.text_embedding(text_ids)) + t.model.codec_embedding(codec_ids)
        return t(inputs_embeds=x, attention_mask=mask, use_cache=False).logits

    def code_predictor_logits(self, first_text_ids, codes) -> torch.Tensor:
        t = self.model.talker
        hidden = t.text_projection(t.model.text_embedding(first_text_ids))[:, 0]
        return t.forward_sub_talker_finetune(codes, hidden)[0]

    def speaker_embedding(self, wav: np.ndarray) -> torch.Tensor:
        return self.model.extract_speaker_embedding(wav, 24000)

    def generate(self, **kwargs):
        return self.model.generate(**kwargs)[0]

    def decode(self, codes: list[torch.Tensor]) -> list[np.ndarray]:
        return self.model.speech_tokenizer.decode([{"audio_codes": c} for c in codes])[0]


class StandaloneSide:
    """q3tts.standalone.Qwen3TTS, through its public API only."""

    def __init__(self, model):
        self.model = model

    def ids(self, text: str, kind: str) -> torch.Tensor:
        tok = self.model.text_tokenizer
        template = {"assistant": tok.assistant_text, "ref": tok.ref_text, "instruct": tok.instruct_text}[kind]
        return torch.tensor([tok.encode(template(text))], dtype=torch.long)

    def talker_logits(self, text_ids, codec_ids, mask) -> torch.Tensor:
        t = self.model.talker
        return t(t.embed_text(text_ids) + t.codec_embedding(codec_ids), attention_mask=mask)[1]

    def code_predictor_logits(self, first_text_ids, codes) -> torch.Tensor:
        t = self.model.talker
        hidden = t.embed_text(first_text_ids)[:, 0]
        return self.model.code_predictor.teacher_forced_logits(hidden, codes, t.codec_embedding)

    def speaker_embedding(self, wav: np.ndarray) -> torch.Tensor:
        return self.model.extract_speaker_embedding(wav, 24000)

    def generate(self, **kwargs):
        return self.model.generate(**kwargs)[0]

    def decode(self, codes: list[torch.Tensor]) -> list[np.ndarray]:
        return self.model.decode_codes(codes)[0]


# --------------------------------------------------------------------------------------------
# Probes: inputs and what is kept of the outputs
# --------------------------------------------------------------------------------------------

TEXTS = ("Hello world, 123!", "中文 字符 and emoji 😀 mixed", "HelloWorld it's  two\nlines\tand tabs", "")
TEMPLATES = ("assistant", "ref", "instruct")
LOGITS_ROWS = ((0, -1), (1, -1), (1, 3))  # (batch row, position): both last positions, row 1's first real one
PAD = 3  # left padding of batch row 1 in the talker probe
AUDIO_HEAD = 480  # first samples kept of each decoded clip
AUDIO_STRIDE = 16  # and every 16th sample of the whole clip


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def text_probes(side) -> dict[str, Any]:
    return {f"ids.{kind}.{i}": side.ids(text, kind)[0].tolist() for kind in TEMPLATES for i, text in enumerate(TEXTS)}


def forward_probes(side, model_type: str) -> dict[str, Any]:
    cfg = tiny_config(model_type)["talker_config"]
    g = _generator(2024)
    text_ids = torch.randint(0, cfg["text_vocab_size"], (2, 10), generator=g)
    codec_ids = torch.randint(0, cfg["vocab_size"], (2, 10), generator=g)
    codes = torch.randint(0, cfg["code_predictor_config"]["vocab_size"], (2, cfg["num_code_groups"]), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :PAD] = 0
    with torch.inference_mode():
        logits = side.talker_logits(text_ids, codec_ids, mask)
        out = {
            "talker.logits_rows": torch.stack([logits[b, p] for b, p in LOGITS_ROWS]),
            "code_predictor.logits": side.code_predictor_logits(text_ids[:, :1], codes),
        }
        if model_type == "base":
            out["speaker_encoder.embedding"] = side.speaker_embedding(speech_like_waveform(0))
    return {k: v.detach().float().clone() for k, v in out.items()}


def _ref_codes(frames: int, groups: int) -> torch.Tensor:
    return torch.randint(0, 16, (frames, groups), generator=_generator(100 + frames))


def audio_probes(side, model_type: str) -> dict[str, Any]:
    groups = tiny_config(model_type)["talker_config"]["num_code_groups"]
    clips = {"audio.clip": [_ref_codes(8, groups)]}
    if model_type == "base":
        clips["audio.batch"] = [_ref_codes(3, groups), _ref_codes(9, groups)]  # padded batch decode
    out = {}
    with torch.inference_mode():
        for name, codes in clips.items():
            for i, wav in enumerate(side.decode(codes)):
                out[f"{name}.{i}"] = audio_summary(wav)
    return out


LONG_FRAMES = 320  # past the codec's 300-frame decode chunk, and its 72-frame attention window
LONG_SPOT = 310  # a frame after the chunk boundary, kept sample by sample (every 4th)


def long_audio_probes(side, model_type: str) -> dict[str, Any]:
    """A clip long enough for chunked decoding and the sliding window to matter: the RMS of every
    frame, and the samples of one frame past the first chunk."""
    groups = tiny_config(model_type)["talker_config"]["num_code_groups"]
    with torch.inference_mode():
        (wav,) = side.decode([_ref_codes(LONG_FRAMES, groups)])
    frames = torch.from_numpy(np.asarray(wav, dtype=np.float64)).reshape(LONG_FRAMES, -1)
    spot = frames[LONG_SPOT, ::4]
    return {"audio.long.frame_rms": frames.pow(2).mean(1).sqrt().float(), f"audio.long.frame{LONG_SPOT}": spot.float()}


def audio_summary(wav: np.ndarray) -> dict[str, Any]:
    wav = np.asarray(wav, dtype=np.float32)
    return dict(
        n_samples=int(wav.shape[0]),
        head=torch.from_numpy(wav[:AUDIO_HEAD].copy()),
        strided=torch.from_numpy(wav[::AUDIO_STRIDE].copy()),
        rms=float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))),
        peak=float(np.abs(wav).max()),
    )


# --- generation ----------------------------------------------------------------------------

GREEDY = dict(do_sample=False, subtalker_dosample=False)
# Talker and sub-talker parameters all distinct from each other and from the defaults, so that a
# parameter routed to the wrong sampler, or ignored, changes the codes.
SAMPLED = dict(
    do_sample=True,
    top_k=8,
    top_p=0.85,
    temperature=1.3,
    repetition_penalty=1.3,
    subtalker_dosample=True,
    subtalker_top_k=4,
    subtalker_top_p=0.95,
    subtalker_temperature=0.6,
)
# Flat distributions (top-k off, nucleus 0.9, temperature 2): a small change in any logit moves
# the sampled code, e.g. a repetition penalty applied where upstream applies none.
SAMPLED_FLAT = dict(
    do_sample=True,
    top_k=0,
    top_p=0.9,
    temperature=2.0,
    repetition_penalty=1.05,
    subtalker_dosample=True,
    subtalker_top_k=0,
    subtalker_top_p=0.9,
    subtalker_temperature=2.0,
)
SAMPLED_RELEASED = dict(
    do_sample=True,
    top_k=50,
    top_p=1.0,
    temperature=0.9,
    repetition_penalty=1.05,
    subtalker_dosample=True,
    subtalker_top_k=50,
    subtalker_top_p=1.0,
    subtalker_temperature=0.9,
)
GEN_TEXTS = ("Hello world, this is a test.", "Speak slowly 123!", "The quick brown fox jumps over the lazy dog again.")


@dataclass(frozen=True)
class GenerationCase:
    name: str
    model_type: str
    build: Callable[[Any], dict[str, Any]]  # side -> generate() keyword arguments
    params: dict[str, Any]
    seed: int = 0
    max_new_tokens: int = 20
    min_frames: int = MIN_FRAMES  # recorded goldens shorter than this are refused (EOS cases: any)


def _clone_prompt(side, icl: list[bool], ref_frames: list[int]) -> dict[str, Any]:
    emb = side.speaker_embedding(speech_like_waveform(0))
    groups = tiny_config("base")["talker_config"]["num_code_groups"]
    return dict(
        ref_code=[_ref_codes(n, groups) if flag else None for flag, n in zip(icl, ref_frames)],
        ref_spk_embedding=[emb] * len(icl),
        x_vector_only_mode=[not f for f in icl],
        icl_mode=list(icl),
    )


def _eos_first_step(build: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """EOS moved to the first greedy code: only min_new_tokens keeps the run going."""

    def with_eos(side) -> dict[str, Any]:
        kwargs = build(side)
        first = side.generate(**kwargs, **GREEDY, max_new_tokens=2)[0]
        return dict(kwargs, eos_token_id=int(first[0, 0]))

    return with_eos


GENERATION_CASES: tuple[GenerationCase, ...] = (
    GenerationCase(
        "custom_voice.greedy",
        "custom_voice",
        lambda s: dict(
            input_ids=[s.ids(GEN_TEXTS[0], "assistant")],
            languages=["english"],
            speakers=["alice"],
            non_streaming_mode=True,
        ),
        GREEDY,
    ),
    GenerationCase(
        "custom_voice.sampled",
        "custom_voice",
        lambda s: dict(
            input_ids=[s.ids(GEN_TEXTS[1], "assistant")],
            languages=["auto"],
            speakers=["bob"],  # a dialect speaker
            instruct_ids=[s.ids("Sound happy.", "instruct")],
            non_streaming_mode=False,
        ),
        SAMPLED,
        seed=1234,
    ),
    GenerationCase(
        "custom_voice.batch",
        "custom_voice",
        lambda s: dict(
            input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS],
            languages=["english", "auto", "chinese"],
            speakers=["alice", "bob", "carol"],
            instruct_ids=[None, s.ids("Whisper.", "instruct"), None],
            non_streaming_mode=False,
        ),
        SAMPLED_RELEASED,
        seed=7,
    ),
    GenerationCase(
        "custom_voice.batch_flat",
        "custom_voice",
        lambda s: dict(
            input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS],
            languages=["german", "english", "auto"],
            speakers=["carol", "alice", "bob"],
            non_streaming_mode=True,
        ),
        SAMPLED_FLAT,
        seed=11,
    ),
    GenerationCase(
        "custom_voice.eos_first_step",
        "custom_voice",
        _eos_first_step(
            lambda s: dict(
                input_ids=[s.ids(GEN_TEXTS[0], "assistant")],
                languages=["english"],
                speakers=["alice"],
                non_streaming_mode=False,
            )
        ),
        GREEDY,
        min_frames=0,
    ),
    GenerationCase(
        "voice_design.greedy",
        "voice_design",
        lambda s: dict(
            input_ids=[s.ids(GEN_TEXTS[1], "assistant")],
            languages=["auto"],
            instruct_ids=[s.ids("A warm low voice, speaking slowly.", "instruct")],
            non_streaming_mode=True,
        ),
        GREEDY,
    ),
    GenerationCase(
        "voice_design.sampled",
        "voice_design",
        lambda s: dict(
            input_ids=[s.ids(GEN_TEXTS[0], "assistant")],
            languages=["english"],
            instruct_ids=[s.ids("Bright.", "instruct")],
            non_streaming_mode=False,
        ),
        SAMPLED,
        seed=99,
    ),
    GenerationCase(
        "voice_design.batch",
        "voice_design",
        lambda s: dict(
            input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS],
            languages=["auto", "english", "german"],
            instruct_ids=[s.ids("A deep calm voice.", "instruct"), None, s.ids("Fast and bright.", "instruct")],
            non_streaming_mode=True,
        ),
        SAMPLED_RELEASED,
        seed=3,
    ),
    GenerationCase(
        "voice_design.eos_first_step",
        "voice_design",
        _eos_first_step(
            lambda s: dict(input_ids=[s.ids(GEN_TEXTS[0], "assistant")], languages=["auto"], non_streaming_mode=False)
        ),
        GREEDY,
        min_frames=0,
    ),
    GenerationCase(
        "base.xvector.greedy",
        "base",
        lambda s: dict(
            input_ids=[s.ids(GEN_TEXTS[0], "assistant")],
            languages=["english"],
            non_streaming_mode=False,
            ref_ids=[s.ids("Hello there.", "ref")],
            voice_clone_prompt=_clone_prompt(s, [False], [0]),
        ),
        GREEDY,
    ),
    GenerationCase(
        "base.icl.sampled",
        "base",
        lambda s: dict(
            input_ids=[s.ids(GEN_TEXTS[2], "assistant")],
            languages=["english"],
            non_streaming_mode=False,
            ref_ids=[s.ids("Hello there.", "ref")],
            voice_clone_prompt=_clone_prompt(s, [True], [5]),
        ),
        SAMPLED,
        seed=21,
    ),
    GenerationCase(
        "base.batch",
        "base",
        lambda s: dict(
            input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS],
            languages=["english", "auto", "chinese"],
            ref_ids=[s.ids("Hi.", "ref"), None, s.ids("A longer reference sentence here.", "ref")],
            voice_clone_prompt=_clone_prompt(s, [True, False, True], [3, 0, 12]),
            non_streaming_mode=True,
        ),
        GREEDY,
    ),
    GenerationCase(
        "base.eos_first_step",
        "base",
        _eos_first_step(
            lambda s: dict(
                input_ids=[s.ids(GEN_TEXTS[1], "assistant")],
                languages=["english"],
                non_streaming_mode=True,
                ref_ids=[s.ids("Hi.", "ref")],
                voice_clone_prompt=_clone_prompt(s, [False], [0]),
            )
        ),
        GREEDY,
        min_frames=0,
    ),
)


def run_generation_case(side, case: GenerationCase, **overrides) -> list[list[list[int]]]:
    """Codes per batch item as nested lists [frames][groups], from torch seed ``case.seed``.
    ``overrides`` replace sampling parameters (to show that they matter)."""
    with torch.inference_mode():
        kwargs = case.build(side)
        torch.manual_seed(case.seed)
        codes = side.generate(**kwargs, **{**case.params, **overrides}, max_new_tokens=case.max_new_tokens)
    return [c.tolist() for c in codes]


def generation_probes(side, model_type: str) -> dict[str, Any]:
    return {f"generate.{c.name}": run_generation_case(side, c) for c in GENERATION_CASES if c.model_type == model_type}


PROBE_GROUPS = {
    "text": lambda side, mt: text_probes(side),
    "forward": forward_probes,
    "generation": generation_probes,
    "audio": audio_probes,
    "long_audio": long_audio_probes,
}


def run_probes(side, model_type: str, groups=tuple(PROBE_GROUPS)) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in groups:
        out.update(PROBE_GROUPS[group](side, model_type))
    return out
