"""Qwen3TTS: the standalone model and its loader."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, check_sizes, load_state_dict
from .codec import CodecDecoder, load_codec
from .config import ConfigError, Qwen3TTSConfig
from .generation import GenerateOptions, generate_codes
from .mel import log_mel_spectrogram
from .prompt import build_talker_prompt
from .speaker_encoder import SpeakerEncoder
from .talker import CodePredictor, Talker
from .voices import VoiceMethods


class Qwen3TTS(VoiceMethods, nn.Module):
    def __init__(self, config: Qwen3TTSConfig):
        super().__init__()
        self.config = config
        self.checkpoint_dir: Path | None = None
        self.talker = Talker(config.talker)
        self.code_predictor = CodePredictor(config.talker.code_predictor, config.talker.transformer.hidden_size)
        self.speaker_encoder = SpeakerEncoder(config.speaker_encoder) if config.speaker_encoder is not None else None

    @property
    def dtype(self) -> torch.dtype:
        return self.talker.codec_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.talker.codec_head.weight.device

    # ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        fast: bool = False,
    ) -> "Qwen3TTS":
        """Load a standalone checkpoint directory (written by ``convert-ckpt``) or a hub repo id
        holding one.

        ``dtype=None`` keeps the stored dtype. Every tensor in the checkpoint must be used and
        every parameter must be present; anything else is a CheckpointError naming the tensors.
        ``fast=True`` calls ``compile_fast()`` on the loaded model.
        """
        directory = resolve_checkpoint_dir(path, revision)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{directory}: no config.json (is this a standalone checkpoint directory?)")
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{config_path}: invalid JSON ({e})") from e
        if "talker_config" in raw and raw.get("format") is None:
            raise CheckpointError(
                f"{directory} is an upstream qwen-tts checkpoint; convert it first: convert-ckpt {directory} OUT_DIR"
            )
        config = Qwen3TTSConfig.from_dict(raw)
        check_sizes(directory)  # a truncated or missing file is named here, not deep in a reader
        with torch.device("meta"):
            model = cls(config)
        state = load_state_dict(directory, dtype=dtype, device=device)
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise CheckpointError(
                f"{directory}: checkpoint does not match the config: "
                + (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} " if missing else "")
                + (f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
            )
        for name, param in model.state_dict().items():
            if tuple(state[name].shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{directory}: tensor {name} has shape {tuple(state[name].shape)}, config implies {tuple(param.shape)}"
                )
        model.load_state_dict(state, strict=True, assign=True)
        model.checkpoint_dir = directory
        model.eval()
        return model.compile_fast() if fast else model

    def compile_fast(self, **engine_options) -> "Qwen3TTS":
        """Switch generate() to the compiled fast path (standalone/fast.py), in the model's current
        dtype: close to upstream, not bit-identical (verify/fast_parity.py measures it). Graphs
        compile on the first generate() per batch size. Returns self."""
        from .fast import FastEngine

        engine = FastEngine(self.talker, self.code_predictor, **engine_options)
        engine.dtype = self.dtype
        object.__setattr__(self, "_fast", engine)  # not a submodule: state_dict must not change
        return self

    # ---------------------------------------------------------------------------------------
    @property
    def codec(self) -> CodecDecoder:
        """The speech-tokenizer decoder, loaded from ``speech_tokenizer/`` on first use, in the
        model's dtype (as upstream loads its codec with the same dtype argument)."""
        codec = getattr(self, "_codec", None)
        if codec is None:
            codec = load_codec(self.checkpoint_dir, self.dtype, self.device)
            # Not a registered submodule: the talker checkpoint's strict key accounting (and
            # state_dict) must not change once audio has been decoded.
            object.__setattr__(self, "_codec", codec)
        return codec

    def decode_codes(self, codes) -> tuple[list[np.ndarray], int]:
        """Codes ([frames, G] per item, or one such tensor) -> (float32 waveforms, sample rate),
        like upstream's Qwen3TTSTokenizer.decode."""
        items = [codes] if isinstance(codes, torch.Tensor) and codes.dim() == 2 else list(codes)
        return self.codec.decode(items), self.codec.cfg.output_sample_rate

    @torch.inference_mode()
    def generate(
        self,
        input_ids: list[torch.Tensor] | None = None,
        instruct_ids: list[torch.Tensor | None] | None = None,
        ref_ids: list[torch.Tensor | None] | None = None,
        voice_clone_prompt: dict | None = None,
        languages: list[str] | None = None,
        speakers: list[str | None] | None = None,
        non_streaming_mode: bool = False,
        progress: bool = False,
        **options,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Codes [frames, G] and talker hidden states [frames, H] per batch item, exactly as
        upstream's Qwen3TTSForConditionalGeneration.generate returns them: the same keyword
        arguments (``options``: max_new_tokens, do_sample, top_k, top_p, temperature,
        subtalker_dosample, subtalker_top_k, subtalker_top_p, subtalker_temperature,
        repetition_penalty, eos_token_id; defaults in generation.GenerateOptions), and under the
        same torch RNG state the same codes. ``progress`` shows a bar over frames."""
        if input_ids is None:
            raise ValueError("generate: input_ids is required (one [1, L] tensor per batch item)")
        params = GenerateOptions.from_kwargs(options).to_params()
        prompt = build_talker_prompt(
            self, input_ids, instruct_ids, ref_ids, voice_clone_prompt, languages, speakers, non_streaming_mode
        )
        engine = getattr(self, "_fast", None)
        if engine is not None and engine.dtype != self.dtype:
            raise RuntimeError(f"the fast path was compiled for {engine.dtype}, the model is now {self.dtype}: "
                               "call compile_fast() again")
        return generate_codes(self, prompt, params, progress=progress, engine=engine)

    @torch.inference_mode()
    def extract_speaker_embedding(self, audio: np.ndarray, sr: int) -> torch.Tensor:
        """x-vector [enc_dim] of a mono 24 kHz waveform, in the model dtype (as upstream's)."""
        if self.speaker_encoder is None:
            raise ValueError(
                f"this checkpoint (tts_model_type={self.config.tts_model_type!r}) has no speaker encoder; "
                "only 'base' models can clone a voice"
            )
        sample_rate = self.config.speaker_encoder.sample_rate
        if sr != sample_rate:
            raise ValueError(f"extract_speaker_embedding: audio must be {sample_rate} Hz, got sr={sr}")
        wav = torch.as_tensor(np.asarray(audio)).float()
        if wav.dim() != 1:
            raise ValueError(f"extract_speaker_embedding: expected a 1-D mono waveform, got shape {tuple(wav.shape)}")
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        if peak > 1.0:
            warnings.warn(f"waveform exceeds [-1, 1] (peak {peak:.3f}); the speaker encoder expects normalised audio")
        mels = log_mel_spectrogram(wav[None].to(self.device), sr=sample_rate).transpose(1, 2)
        return self.speaker_encoder(mels.to(self.dtype))[0]


def resolve_checkpoint_dir(path: str | os.PathLike, revision: str | None = None, probe_timeout: float = 5.0) -> Path:
    """A local directory as is; anything shaped like ``owner/name`` is a hub repo id.

    A hub id is served from the local hub cache when possible. Otherwise it is downloaded, after
    a short reachability probe so that an offline machine fails at once instead of hanging in
    retries; with HF_HUB_OFFLINE=1 nothing is fetched.
    """
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p} is a file, expected a checkpoint directory")
    text = str(path)
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or text.endswith("/"):
        raise CheckpointError(f"{text}: no such directory (and not a hub repo id of the form owner/name)")
    try:
        import huggingface_hub
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise CheckpointError(f"{text}: not a local directory, and huggingface_hub is not installed to fetch it") from e
    try:
        return Path(snapshot_download(text, revision=revision, local_files_only=True))
    except Exception:
        pass  # not cached: fetch it below
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise CheckpointError(f"{text}: not in the local hub cache, and HF_HUB_OFFLINE is set")
    endpoint = huggingface_hub.constants.ENDPOINT
    if not _reachable(endpoint, probe_timeout):
        raise CheckpointError(f"{text}: cannot reach {endpoint} (offline?); download it elsewhere and pass the directory")
    try:
        return Path(snapshot_download(text, revision=revision))
    except Exception as e:  # missing repo, auth, network: one clear message
        raise CheckpointError(f"{text}: download from {endpoint} failed ({type(e).__name__}: {e})") from e


def _reachable(url: str, timeout: float) -> bool:
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
