"""Golden outputs recorded from upstream qwen-tts on the tiny fixtures: the reference of the fast
test tier, which runs without qwen_tts and transformers.

    python -m q3tts.verify.goldens [--out tests/golden]     # reference environment: (re)write
    python -m q3tts.verify.goldens --check                   # exit 1 if the committed ones are stale

writes
- ``fixture_tensors.json``: the ordered tensor specs of the fixture checkpoints (see
  verify/fixtures.py), so the fast tier writes the same weights without upstream's modules;
- ``<model_type>.json``: what upstream computes on that fixture, with the versions that computed it.

The probes are defined once, here, over a small interface that both sides implement
(`UpstreamSide`, `StandaloneSide`): the same inputs go to both, and `run_probes` returns
``{name: value}`` with the same names on both sides. Ids and codes must be equal; floats are held
to verify/compare.py's fp32 tolerances.

Only this module's upstream side imports qwen_tts, and only when it is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .compare import TOLERANCES, compare
from .fixtures import (
    MODEL_TYPES, SUITE_SEEDS, load_tensor_specs, record_tensor_specs, tiny_config, write_upstream_checkpoint,
)
from .forward_parity import speech_like_waveform

GOLDENS_FORMAT = "q3tts-goldens"
SPECS_FILE = "fixture_tensors.json"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
MIN_FRAMES = 4  # a generation golden shorter than this would hardly test the decode loop
ATOL = TOLERANCES[torch.float32].atol


def golden_file(model_type: str) -> str:
    return f"{model_type}.json"


# --------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------

class UpstreamSide:
    """qwen-tts' Qwen3TTSModel wrapper (processor + model)."""

    def __init__(self, wrapper):
        self.wrapper, self.model = wrapper, wrapper.model

    def ids(self, text: str, kind: str) -> torch.Tensor:
        w = self.wrapper
        template = {"assistant": w._build_assistant_text, "ref": w._build_ref_text, "instruct": w._build_instruct_text}[kind]
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
    return dict(n_samples=int(wav.shape[0]), head=torch.from_numpy(wav[:AUDIO_HEAD].copy()),
                strided=torch.from_numpy(wav[::AUDIO_STRIDE].copy()),
                rms=float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))), peak=float(np.abs(wav).max()))


# --- generation ----------------------------------------------------------------------------

GREEDY = dict(do_sample=False, subtalker_dosample=False)
# Talker and sub-talker parameters all distinct from each other and from the defaults, so that a
# parameter routed to the wrong sampler, or ignored, changes the codes.
SAMPLED = dict(do_sample=True, top_k=8, top_p=0.85, temperature=1.3, repetition_penalty=1.3,
               subtalker_dosample=True, subtalker_top_k=4, subtalker_top_p=0.95, subtalker_temperature=0.6)
# Flat distributions (top-k off, nucleus 0.9, temperature 2): a small change in any logit moves
# the sampled code, e.g. a repetition penalty applied where upstream applies none.
SAMPLED_FLAT = dict(do_sample=True, top_k=0, top_p=0.9, temperature=2.0, repetition_penalty=1.05,
                    subtalker_dosample=True, subtalker_top_k=0, subtalker_top_p=0.9, subtalker_temperature=2.0)
SAMPLED_RELEASED = dict(do_sample=True, top_k=50, top_p=1.0, temperature=0.9, repetition_penalty=1.05,
                        subtalker_dosample=True, subtalker_top_k=50, subtalker_top_p=1.0, subtalker_temperature=0.9)
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
    return dict(ref_code=[_ref_codes(n, groups) if flag else None for flag, n in zip(icl, ref_frames)],
                ref_spk_embedding=[emb] * len(icl), x_vector_only_mode=[not f for f in icl], icl_mode=list(icl))


def _eos_first_step(build: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """EOS moved to the first greedy code: only min_new_tokens keeps the run going."""
    def with_eos(side) -> dict[str, Any]:
        kwargs = build(side)
        first = side.generate(**kwargs, **GREEDY, max_new_tokens=2)[0]
        return dict(kwargs, eos_token_id=int(first[0, 0]))
    return with_eos


GENERATION_CASES: tuple[GenerationCase, ...] = (
    GenerationCase("custom_voice.greedy", "custom_voice", lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[0], "assistant")], languages=["english"], speakers=["alice"],
        non_streaming_mode=True), GREEDY),
    GenerationCase("custom_voice.sampled", "custom_voice", lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[1], "assistant")], languages=["auto"], speakers=["bob"],  # a dialect speaker
        instruct_ids=[s.ids("Sound happy.", "instruct")], non_streaming_mode=False), SAMPLED, seed=1234),
    GenerationCase("custom_voice.batch", "custom_voice", lambda s: dict(
        input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS], languages=["english", "auto", "chinese"],
        speakers=["alice", "bob", "carol"], instruct_ids=[None, s.ids("Whisper.", "instruct"), None],
        non_streaming_mode=False), SAMPLED_RELEASED, seed=7),
    GenerationCase("custom_voice.batch_flat", "custom_voice", lambda s: dict(
        input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS], languages=["german", "english", "auto"],
        speakers=["carol", "alice", "bob"], non_streaming_mode=True), SAMPLED_FLAT, seed=11),
    GenerationCase("custom_voice.eos_first_step", "custom_voice", _eos_first_step(lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[0], "assistant")], languages=["english"], speakers=["alice"],
        non_streaming_mode=False)), GREEDY, min_frames=0),
    GenerationCase("voice_design.greedy", "voice_design", lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[1], "assistant")], languages=["auto"],
        instruct_ids=[s.ids("A warm low voice, speaking slowly.", "instruct")], non_streaming_mode=True), GREEDY),
    GenerationCase("voice_design.sampled", "voice_design", lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[0], "assistant")], languages=["english"],
        instruct_ids=[s.ids("Bright.", "instruct")], non_streaming_mode=False), SAMPLED, seed=99),
    GenerationCase("voice_design.batch", "voice_design", lambda s: dict(
        input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS], languages=["auto", "english", "german"],
        instruct_ids=[s.ids("A deep calm voice.", "instruct"), None, s.ids("Fast and bright.", "instruct")],
        non_streaming_mode=True), SAMPLED_RELEASED, seed=3),
    GenerationCase("voice_design.eos_first_step", "voice_design", _eos_first_step(lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[0], "assistant")], languages=["auto"], non_streaming_mode=False)),
        GREEDY, min_frames=0),
    GenerationCase("base.xvector.greedy", "base", lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[0], "assistant")], languages=["english"], non_streaming_mode=False,
        ref_ids=[s.ids("Hello there.", "ref")], voice_clone_prompt=_clone_prompt(s, [False], [0])), GREEDY),
    GenerationCase("base.icl.sampled", "base", lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[2], "assistant")], languages=["english"], non_streaming_mode=False,
        ref_ids=[s.ids("Hello there.", "ref")], voice_clone_prompt=_clone_prompt(s, [True], [5])), SAMPLED, seed=21),
    GenerationCase("base.batch", "base", lambda s: dict(
        input_ids=[s.ids(t, "assistant") for t in GEN_TEXTS], languages=["english", "auto", "chinese"],
        ref_ids=[s.ids("Hi.", "ref"), None, s.ids("A longer reference sentence here.", "ref")],
        voice_clone_prompt=_clone_prompt(s, [True, False, True], [3, 0, 12]), non_streaming_mode=True), GREEDY),
    GenerationCase("base.eos_first_step", "base", _eos_first_step(lambda s: dict(
        input_ids=[s.ids(GEN_TEXTS[1], "assistant")], languages=["english"], non_streaming_mode=True,
        ref_ids=[s.ids("Hi.", "ref")], voice_clone_prompt=_clone_prompt(s, [False], [0]))), GREEDY, min_frames=0),
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


PROBE_GROUPS = {"text": lambda side, mt: text_probes(side), "forward": forward_probes,
                "generation": generation_probes, "audio": audio_probes, "long_audio": long_audio_probes}


def run_probes(side, model_type: str, groups=tuple(PROBE_GROUPS)) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in groups:
        out.update(PROBE_GROUPS[group](side, model_type))
    return out


# --------------------------------------------------------------------------------------------
# Storage and comparison
# --------------------------------------------------------------------------------------------

def _floats(t: torch.Tensor) -> list[float]:
    # The shortest decimal that gives back the same float32: exact, and half the digits of float64.
    return [float(str(x)) for x in t.detach().to(torch.float32).flatten().numpy()]


def encode_value(value: Any) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        return dict(kind="floats", shape=list(value.shape), values=_floats(value))
    if isinstance(value, dict):  # audio summary
        return dict(kind="audio", n_samples=value["n_samples"], rms=value["rms"], peak=value["peak"],
                    head=_floats(value["head"]), strided=_floats(value["strided"]))
    if value and isinstance(value[0], list):
        return dict(kind="codes", items=value)
    return dict(kind="ids", ids=value)


@dataclass
class GoldenCheck:
    name: str
    passed: bool
    detail: str


def _first_code_difference(ref: list, got: list) -> str:
    if len(ref) != len(got):
        return f"{len(got)} items, golden has {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, got)):
        for f, (fa, fb) in enumerate(zip(a, b)):
            if fa != fb:
                g = next(k for k, (x, y) in enumerate(zip(fa, fb)) if x != y) if len(fa) == len(fb) else -1
                return f"item {i}: first difference at frame {f}, group {g}: golden {fa}, got {fb}"
        if len(a) != len(b):
            return f"item {i}: {len(b)} frames, golden has {len(a)}"
    return "identical"


def _close(name: str, ref: list[float], got: torch.Tensor, shape, atol: float | None = None) -> GoldenCheck:
    ref_t = torch.tensor(ref, dtype=torch.float32).reshape(shape)
    got = got.detach().float()
    if atol is None:
        c = compare(name, ref_t, got, torch.float32)
        return GoldenCheck(name, c.passed, f"max_abs {c.max_abs:.3e} (bound {c.bound:.1e}), cosine {c.cosine:.7f} {c.note}")
    if tuple(got.shape) != tuple(ref_t.shape):
        return GoldenCheck(name, False, f"shape {tuple(got.shape)}, golden {tuple(ref_t.shape)}")
    err = float((ref_t - got).abs().max()) if got.numel() else 0.0
    return GoldenCheck(name, err <= atol, f"max_abs {err:.3e} (bound {atol:.1e})")


def check_record(name: str, golden: dict[str, Any], got: Any) -> GoldenCheck:
    kind = golden["kind"]
    if kind == "ids":
        return GoldenCheck(name, got == golden["ids"], f"golden {golden['ids']}, got {got}")
    if kind == "codes":
        diff = _first_code_difference(golden["items"], got)
        return GoldenCheck(name, diff == "identical", diff)
    if kind == "floats":
        return _close(name, golden["values"], got, golden["shape"])
    if got["n_samples"] != golden["n_samples"]:
        return GoldenCheck(name, False, f"{got['n_samples']} samples, golden has {golden['n_samples']}")
    # The fp32 tolerance, not the looser cross-implementation audio one: one codec against
    # itself decodes bit-identically here (verify/compare.py), and at 1e-4 a 1% change in one
    # late SnakeBeta goes unnoticed.
    checks = [_close(f"{name}.head", golden["head"], got["head"], [len(golden["head"])]),
              _close(f"{name}.strided", golden["strided"], got["strided"], [len(golden["strided"])]),
              _close(f"{name}.rms", [golden["rms"]], torch.tensor([got["rms"]]), [1], ATOL),
              _close(f"{name}.peak", [golden["peak"]], torch.tensor([got["peak"]]), [1], ATOL)]
    return GoldenCheck(name, all(c.passed for c in checks), "; ".join(f"{c.name}: {c.detail}" for c in checks))


def check_probes(golden: dict[str, Any], got: dict[str, Any]) -> list[GoldenCheck]:
    """One check per golden record, plus one for probes the golden lacks (or has extra)."""
    records = golden["records"]
    checks = [check_record(n, records[n], got[n]) for n in records if n in got]
    missing, extra = sorted(set(records) - set(got)), sorted(set(got) - set(records))
    if missing or extra:
        checks.append(GoldenCheck("probe set", False, f"not computed: {missing}; not in the golden: {extra}"))
    return checks


def weights_digest(directory: str | Path) -> str:
    """sha256 over the tensors (name, dtype, shape, bytes) of a safetensors file: independent of
    the writer's header layout, so it compares fixtures across safetensors versions."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(directory)).items()):
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fixture_digests(checkpoint_dir: str | Path) -> dict[str, str]:
    d = Path(checkpoint_dir)
    return {rel: weights_digest(d / rel) for rel in ("model.safetensors", "speech_tokenizer/model.safetensors")}


def load_goldens(directory: str | Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
    directory = Path(directory)
    out = {}
    for mt in MODEL_TYPES:
        golden = json.loads((directory / golden_file(mt)).read_text(encoding="utf-8"))
        if golden.get("format") != GOLDENS_FORMAT:
            raise ValueError(f"{directory / golden_file(mt)}: not a goldens file")
        out[mt] = golden
    return out


# --------------------------------------------------------------------------------------------
# Recording (reference environment)
# --------------------------------------------------------------------------------------------

def reference_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("qwen-tts", "transformers", "torch", "numpy", "tokenizers", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def record_goldens(work_dir: str | Path) -> dict[str, Any]:
    """{file name: content} of every golden file, computed by upstream on fixtures written with
    upstream's own modules (needs qwen_tts)."""
    from .forward_parity import load_upstream_wrapper

    versions = reference_versions()
    files: dict[str, Any] = {SPECS_FILE: dict(record_tensor_specs(), recorded_with=versions)}
    for mt in MODEL_TYPES:
        ckpt = write_upstream_checkpoint(Path(work_dir) / mt, mt, seed=SUITE_SEEDS[mt])
        probes = run_probes(UpstreamSide(load_upstream_wrapper(ckpt, torch.float32)), mt)
        for case in GENERATION_CASES:
            value = probes.get(f"generate.{case.name}")
            if value is not None and min(len(item) for item in value) < case.min_frames:
                raise RuntimeError(f"{case.name}: upstream stopped before {case.min_frames} frames; pick another case or seed")
        files[golden_file(mt)] = dict(
            format=GOLDENS_FORMAT, format_version=1, recorded_with=versions,
            fixture=dict(model_type=mt, seed=SUITE_SEEDS[mt], dtype="float32", weights_sha256=fixture_digests(ckpt)),
            records={name: encode_value(value) for name, value in probes.items()},
        )
    return files


def dumps(obj: Any, depth: int) -> str:
    """JSON laid out one item per line down to ``depth`` levels and compact below: one record (or
    one tensor of a spec) per line, so that a changed golden is a small diff."""
    def render(value: Any, level: int) -> str:
        if level >= depth or not isinstance(value, (dict, list)) or not value:
            return json.dumps(value, ensure_ascii=False)
        pad = " " * (level + 1)
        if isinstance(value, dict):
            items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {render(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
        return "[\n" + ",\n".join(pad + render(v, level + 1) for v in value) + "\n" + " " * level + "]"

    return render(obj, 0) + "\n"


def stale_records(committed_dir: str | Path, fresh: dict[str, Any]) -> list[str]:
    """What differs between the committed goldens and freshly recorded ones (empty: current)."""
    committed_dir = Path(committed_dir)
    problems = []
    specs = load_tensor_specs(committed_dir / SPECS_FILE)
    if specs["parts"] != fresh[SPECS_FILE]["parts"]:
        problems.append(f"{SPECS_FILE}: the tensor specs differ from upstream's modules")
    committed = load_goldens(committed_dir)
    for mt in MODEL_TYPES:
        new = fresh[golden_file(mt)]
        if committed[mt]["fixture"] != new["fixture"]:
            problems.append(f"{golden_file(mt)}: fixture {committed[mt]['fixture']} != {new['fixture']}")
        got = {n: decode_value(r) for n, r in new["records"].items()}
        problems += [f"{golden_file(mt)}: {c.name}: {c.detail}" for c in check_probes(committed[mt], got) if not c.passed]
    return problems


def decode_value(record: dict[str, Any]) -> Any:
    """The in-memory form of a stored record (as the probes return it)."""
    kind = record["kind"]
    if kind == "floats":
        return torch.tensor(record["values"], dtype=torch.float32).reshape(record["shape"])
    if kind == "audio":
        return dict(record, head=torch.tensor(record["head"]), strided=torch.tensor(record["strided"]))
    return record["items"] if kind == "codes" else record["ids"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m q3tts.verify.goldens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"golden directory (default: {DEFAULT_DIR})")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the test suite runs
    with tempfile.TemporaryDirectory() as tmp:
        files = record_goldens(tmp)
    if args.check:
        problems = stale_records(args.out, files)
        for p in problems:
            print(f"stale: {p}", file=sys.stderr)
        print("goldens are current" if not problems else f"{len(problems)} stale golden(s); rerun without --check")
        return 1 if problems else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        # Specs: one tensor per line (parts > part > tensors > tensor); goldens: one record per line.
        (args.out / name).write_text(dumps(content, 4 if name == SPECS_FILE else 2), encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
