"""ICL cloning from a recording, end to end from the wav file: the standalone runtime makes the
reference codes itself and matches upstream's prompt, codes and audio; and it does so with
transformers and qwen_tts unimportable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from q3tts.verify.cases.forward import speech_like_waveform

pytestmark = pytest.mark.reference  # drives upstream qwen-tts

FP32 = torch.float32
REF_TEXT = "Hello there, this is my voice."


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    rng = np.random.default_rng(5)
    out = {}
    for name, sr, seconds, stereo in [
        ("mono24k", 24000, 1.3, False),
        ("stereo44k", 44100, 0.9, True),
        ("mono16k", 16000, 1.6, False),
    ]:
        wav = speech_like_waveform(len(out) + 3, seconds, sr) + 0.1 * rng.standard_normal(int(seconds * sr)).astype(
            np.float32
        )
        data = np.stack([wav, 0.6 * wav], axis=-1) if stereo else wav
        path = root / f"{name}.wav"
        sf.write(path, data, sr, subtype="PCM_16")
        out[name] = str(path)
    return out


@pytest.mark.parametrize(
    "ref",
    ["mono24k", "stereo44k", ["mono24k", "mono16k"], ["mono24k", "mono24k"]],
    ids=["mono24k", "stereo44k", "mixed-rates", "same-rate-batch"],
)
def test_prompt_from_audio_matches_upstream(load_models, ref_files, ref):
    wrapper, standalone = load_models("base", FP32)
    audio = [ref_files[r] for r in ref] if isinstance(ref, list) else ref_files[ref]
    up = wrapper.create_voice_clone_prompt(ref_audio=audio, ref_text=REF_TEXT)
    st = standalone.create_voice_clone_prompt(ref_audio=audio, ref_text=REF_TEXT)
    assert len(up) == len(st)
    for u, s in zip(up, st):
        assert s.icl_mode and torch.equal(u.ref_code.cpu(), s.ref_code)
        assert torch.equal(u.ref_spk_embedding.cpu(), s.ref_spk_embedding.cpu())


@pytest.mark.parametrize("non_streaming", [False, True], ids=["streaming", "non-streaming"])
@pytest.mark.parametrize("ref", ["mono24k", "stereo44k"])
def test_generate_voice_clone_from_wav_matches_upstream(load_models, ref_files, ref, non_streaming):
    wrapper, standalone = load_models("base", FP32)
    kwargs = dict(
        language="English",
        ref_audio=ref_files[ref],
        ref_text=REF_TEXT,
        non_streaming_mode=non_streaming,
        max_new_tokens=16,
        do_sample=True,
        top_k=8,
        temperature=0.9,
    )
    torch.manual_seed(123)
    (ref_wav,), sr_ref = wrapper.generate_voice_clone("Nice to meet you.", **kwargs)
    torch.manual_seed(123)
    (got,), sr = standalone.generate_voice_clone("Nice to meet you.", **kwargs)
    assert sr == sr_ref and got.shape == ref_wav.shape and got.shape[0] > 0
    np.testing.assert_array_equal(got, ref_wav)


ISOLATED = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('transformers', 'qwen_tts', 'librosa'):
            raise ImportError(f'blocked: {name}')
        return None
sys.meta_path.insert(0, Block())
import numpy as np, torch
torch.set_num_threads(1)  # as the suite (conftest): the same kernels as the in-process upstream
from q3tts.standalone import Qwen3TTS
model = Qwen3TTS.from_pretrained(sys.argv[1], dtype=torch.float32)
codes = model.encode_audio(sys.argv[2])[0]
torch.manual_seed(7)
(wav,), sr = model.generate_voice_clone("Nice to meet you.", language="English", ref_audio=sys.argv[2],
                                        ref_text="Hello there, this is my voice.", max_new_tokens=8)
np.save(sys.argv[3], codes.numpy()); np.save(sys.argv[4], wav)
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'qwen_tts', 'librosa'))
assert not bad, bad
"""


def test_encoding_and_icl_synthesis_without_transformers(load_models, checkpoints, ref_files, tmp_path):
    _, st_dir = checkpoints["base"]
    codes_out, wav_out = tmp_path / "codes.npy", tmp_path / "wav.npy"
    r = subprocess.run(
        [sys.executable, "-c", ISOLATED, str(st_dir), ref_files["stereo44k"], str(codes_out), str(wav_out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    wrapper, _ = load_models("base", FP32)
    ref_codes = wrapper.model.speech_tokenizer.encode(ref_files["stereo44k"]).audio_codes[0]
    np.testing.assert_array_equal(np.load(codes_out), ref_codes.numpy())
    torch.manual_seed(7)
    (ref_wav,), _ = wrapper.generate_voice_clone(
        "Nice to meet you.", language="English", ref_audio=ref_files["stereo44k"], ref_text=REF_TEXT, max_new_tokens=8
    )
    np.testing.assert_array_equal(np.load(wav_out), ref_wav)


CLI = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('transformers', 'qwen_tts', 'librosa'):
            raise ImportError(f'blocked: {name}')
sys.meta_path.insert(0, Block())
import torch
torch.set_num_threads(1)  # as the suite (conftest): the same kernels as the in-process upstream
from q3tts.standalone.cli import main
main(sys.argv[1:])
"""


def _cli(*args):
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_encode_command_writes_upstreams_codes(load_models, checkpoints, ref_files, tmp_path):
    out = tmp_path / "codes"
    files = [ref_files["mono24k"], ref_files["stereo44k"]]
    r = _cli("encode", *files, "--model", checkpoints["base"][1], "--out", out, "--progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "encode" in r.stderr  # the progress bar
    wrapper, _ = load_models("base", FP32)
    for f in files:
        stem = f.rsplit("/", 1)[-1][:-4]
        got = np.load(out / f"{stem}.npy")
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, wrapper.model.speech_tokenizer.encode(f).audio_codes[0].numpy())
    bad = _cli("encode", str(tmp_path / "nope.wav"), "--model", checkpoints["base"][1], "--out", out)
    assert bad.returncode == 1 and "cannot read audio" in bad.stderr and "Traceback" not in bad.stderr


def test_synthesize_clones_from_ref_audio_and_text_without_codes(load_models, checkpoints, ref_files, tmp_path):
    wav_path = tmp_path / "clone.wav"
    r = _cli(
        "synthesize",
        "--model",
        checkpoints["base"][1],
        "--text",
        "Nice to meet you.",
        "--language",
        "english",
        "--ref-audio",
        ref_files["stereo44k"],
        "--ref-text",
        REF_TEXT,
        "--seed",
        "4",
        "--max-new-tokens",
        "12",
        "--out",
        wav_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got, sr = sf.read(str(wav_path), dtype="float32")
    wrapper, _ = load_models("base", FP32)
    torch.manual_seed(4)
    (ref_wav,), _ = wrapper.generate_voice_clone(
        "Nice to meet you.", language="english", ref_audio=ref_files["stereo44k"], ref_text=REF_TEXT, max_new_tokens=12
    )
    # The wav file is 16-bit: compare after the same quantisation.
    expected = sf.read(_write16(tmp_path / "ref.wav", ref_wav, sr), dtype="float32")[0]
    np.testing.assert_array_equal(got, expected)


def _write16(path, wav, sr) -> str:
    sf.write(str(path), wav, sr)
    return str(path)
