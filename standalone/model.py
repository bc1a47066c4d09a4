"""Qwen3TTS: the standalone model and its loader."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .audio import as_waveform, check_finite, check_rate
from .checkpoint import CheckpointError, CheckpointReader, check_sizes, load_state_dict
from .codec import CodecDecoder, load_codec
from .config import ConfigError, Qwen3TTSConfig
from .config_shapes import check_model_shapes, shapes_of
from .direct_load import checkpoint_format, converted_checkpoint
from .generation import GenerateOptions, generate_codes
from .manifest import verify_hashes
from .mel import log_mel_spectrogram
from .network import network_parts
from .precision import MODE_NAMES, Precision, cast_state, parse_mode, set_activation_dtype, stored_precision
from .prompt import build_talker_prompt
from .quant import QuantMode, QuantReport, parse_quant, quant_activation_dtype, quantize_model
from .speaker_encoder import SpeakerEncoder
from .speech_encoder import SpeechEncoder, load_speech_encoder
from .streaming import StreamingVoiceMethods
from .talker import CodePredictor, Talker
from .voices import VoiceMethods
from .work_memory import check_work, speaker_bytes


class Qwen3TTS(StreamingVoiceMethods, VoiceMethods, nn.Module):
    def __init__(self, config: Qwen3TTSConfig):
        super().__init__()
        self.config = config
        self.checkpoint_dir: Path | None = None
        self.precision: Precision | None = None  # a mixed mode (precision.py), else None
        self.quant: QuantMode | None = None  # weight-only quantization of the fast path (quant.py)
        self.quant_report: QuantReport | None = None
        parts = network_parts(config)
        self.talker: Talker = parts["talker"]
        self.code_predictor: CodePredictor = parts["code_predictor"]
        self.speaker_encoder: SpeakerEncoder | None = parts["speaker_encoder"]

    @property
    def dtype(self) -> torch.dtype:
        """The activation dtype: the model's dtype in the plain modes, fp32 in a mixed one (whose
        norms are always fp32)."""
        return self.talker.decoder.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.talker.codec_head.weight.device

    # ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | str | Precision | None = None,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        convert: bool = True,
        progress: bool | None = None,
        fast: bool = False,
        quant: str | None = None,
        verify: str | None = None,
    ) -> Qwen3TTS:
        """Load a checkpoint: a standalone directory (written by ``convert-ckpt``), an upstream
        qwen-tts directory, or a hub repo id of either kind. An upstream checkpoint is converted
        once into the conversion cache (direct_load.py) and loaded from there; ``convert=False``
        refuses instead. ``progress`` shows a bar while converting (default: stderr is a terminal).

        ``dtype=None`` keeps the stored dtypes (and the stored mixed mode, if the checkpoint was
        converted with one). ``dtype`` may also be a name: "fp32", "bf16", "fp16" (the plain modes,
        like the torch dtypes) or "bf16-mixed", "fp16-mixed" (half-precision weights for the big
        linears, fp32 elsewhere; precision.py says which and why). A plain dtype given for a mixed
        checkpoint casts every tensor to it: the plain mode, the stored split dropped. Every tensor
        in the checkpoint must be used and every parameter must be present; anything else is a
        CheckpointError naming the tensors.
        ``fast=True`` calls ``compile_fast()`` on the loaded model.
        ``quant`` ("int8", "int8-g32", "int8-g64", "int8-g128", "int4", "int4-g32", "int4-g64",
        "int4-g128"; default None) replaces the talker's and code predictor's transformer linears
        with weight-only quantized ones (quant.py) and implies ``fast=True``: a quantized model runs
        the fast path only. It needs a plain fp32 or bf16 dtype (the activations' dtype, and int4's
        scales'); ``dtype=None`` means fp32 here, the mode verify-parity --fast --quant measures.
        ``verify``: None or "size" (default: every file the manifest lists is present at its
        size) or "sha256" (every listed file hashed and compared with the manifest before any
        weight is read: a flipped bit is named; needs a manifest, i.e. convert-ckpt output). Its
        cost, sha256 of a 100 MiB file on an AMD EPYC (SHA-NI; reports/work-memory.json): 1.2
        GB/s read from disk, 1.3-1.4 GB/s from the page cache, so about 2 s more per 2.4 GB.
        """
        check_load_arguments(path, dtype, device, verify)
        quant_mode = parse_quant(quant)
        mode = parse_mode(dtype) if isinstance(dtype, str) else dtype
        directory = resolve_checkpoint_dir(path, revision)
        if checkpoint_format(directory) == "upstream":
            if not convert:
                raise CheckpointError(
                    f"{directory} is an upstream qwen-tts checkpoint and conversion is off (convert=False / "
                    f"--no-convert); convert it first: convert-ckpt {directory} OUT_DIR"
                )
            directory = converted_checkpoint(directory, progress=progress)
        config = read_checked_config(directory, verify)
        with torch.device("meta"):
            model = cls(config)
        if quant_mode is not None:  # before reading any weight
            mode = quant_activation_dtype(quant_mode, mode)
        if mode is None:
            mode = stored_precision(directory)  # a mixed checkpoint loads as mixed
        precision = mode if isinstance(mode, Precision) else None
        state = load_state_dict(directory, dtype=None if precision else mode, device=device)
        if precision is not None:
            state = cast_state(state, precision)
        check_state(model, state, directory)
        model.load_state_dict(state, strict=True, assign=True)
        model.checkpoint_dir = directory
        if precision is not None:
            model.precision = precision
            set_activation_dtype(model, torch.float32)
        model.eval()
        if quant_mode is not None:
            quantize_model(model, quant_mode)
        return model.compile_fast() if fast or quant_mode is not None else model

    def compile_fast(self, warm_up=(), **engine_options) -> Qwen3TTS:
        """Switch generate() to the compiled fast path (standalone/fast.py), in the model's current
        dtype: close to upstream, not bit-identical (verify/cases/fast.py measures it). Graphs
        compile on the first generate() per batch size, or now for the batch sizes in ``warm_up``
        (e.g. ``(1,)``), so that no request pays for them. Engine options: ``cache_dir`` sets
        where compiled graphs are cached (fast.compile_cache_dir); ``compile_prefill=True`` compiles
        the prompt prefill too (about 20 ms off a short prompt's first frame, about a minute more
        first-start compile at 0.6B; measured by verify-parity --fast --compile-prefill). Returns self."""
        from .fast import FastEngine

        if self.precision is not None:
            raise ValueError(
                f"the fast path runs the plain modes only; this model is {self.precision} (load it with "
                "dtype=torch.float32 or torch.bfloat16 for the fast path)"
            )
        engine = FastEngine(self.talker, self.code_predictor, **engine_options)
        engine.dtype = self.dtype
        if warm_up:  # before switching: a failed warm-up leaves the model as it was
            engine.warm_up(warm_up)
        object.__setattr__(self, "_fast", engine)  # not a submodule: state_dict must not change
        return self

    def fast_engine(self):
        """The compiled engine if compile_fast() was called (else None), checked against the
        model's current dtype: its graphs were traced for one dtype."""
        engine = getattr(self, "_fast", None)
        if engine is not None and engine.dtype != self.dtype:
            raise RuntimeError(
                f"the fast path was compiled for {engine.dtype}, the model is now {self.dtype}: call compile_fast() again"
            )
        return engine

    # ---------------------------------------------------------------------------------------
    @property
    def codec(self) -> CodecDecoder:
        """The speech-tokenizer decoder, loaded from ``speech_tokenizer/`` on first use, in the
        model's dtype (as upstream loads its codec with the same dtype argument)."""
        codec = getattr(self, "_codec", None)
        if codec is None:
            # Loaded outside any inference mode the first call may run under: its weights stay
            # ordinary tensors (fine-tuning, weight edits), as the talker's are.
            with torch.inference_mode(False):
                codec = load_codec(self.checkpoint_dir, self.dtype, self.device)
            # Not a registered submodule: the talker checkpoint's strict key accounting (and
            # state_dict) must not change once audio has been decoded.
            object.__setattr__(self, "_codec", codec)
        return codec

    def decode_codes(
        self, codes, max_frames: int | None = None, progress: bool | None = None, max_work_bytes=None
    ) -> tuple[list[np.ndarray], int]:
        """Codes ([frames, G] per item, or one such tensor) -> (float32 waveforms, sample rate),
        like upstream's Qwen3TTSTokenizer.decode. ``max_frames`` refuses longer items before any
        decoding (None: no cap; 100k frames take about half an hour on a CPU); ``progress`` shows a
        bar over frames (None: when stderr is a terminal and there are over 3000 frames).
        ``max_work_bytes`` (bytes or "8G") refuses a decode whose estimated memory is above it
        before anything is allocated (None: Q3TTS_MAX_WORK_BYTES, else half the RAM)."""
        if not isinstance(codes, (torch.Tensor, np.ndarray, list, tuple)):
            raise TypeError(f"codes must be a tensor, an array or a list of them, got {type(codes).__name__}")
        if isinstance(codes, (torch.Tensor, np.ndarray)) and codes.ndim == 2:
            codes = [codes]
        if isinstance(codes, (torch.Tensor, np.ndarray)) and codes.ndim != 3:
            raise ValueError(
                f"codes must be [frames, G], [batch, frames, G] or a list of [frames, G]; got shape {tuple(codes.shape)}"
            )
        items = list(codes)
        return self.codec.decode(items, max_frames, progress, max_work_bytes), self.codec.cfg.output_sample_rate

    @property
    def speech_encoder(self) -> SpeechEncoder:
        """The speech-tokenizer encoder (audio -> codes), loaded from ``speech_tokenizer/`` on
        first use in the model's dtype, like the decoder."""
        encoder = getattr(self, "_speech_encoder", None)
        if encoder is None:
            with torch.inference_mode(False):  # ordinary weights, as for the codec
                encoder = load_speech_encoder(self.checkpoint_dir, self.dtype, self.device)
            object.__setattr__(self, "_speech_encoder", encoder)  # not a submodule, as the codec
        return encoder

    def encode_audio(self, audio, sr: int | None = None, max_work_bytes=None) -> list[torch.Tensor]:
        """Audio -> int64 codes [frames, G] per item, as upstream's ``Qwen3TTSTokenizer.encode``.

        ``audio``: a path, an ``(array, sr)`` pair, an array with ``sr=``, or a list of these,
        encoded as one right-padded batch (then the last frame of a shorter item can differ from
        encoding it alone, exactly as upstream). Any sample rate; resampled as upstream does.
        ``max_work_bytes`` caps the estimated memory of the encoding, as in decode_codes."""
        return self.speech_encoder.encode(audio, sr, max_work_bytes)

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
        opts = GenerateOptions.from_kwargs(options)
        if opts.eos_token_id is not None and opts.eos_token_id >= self.config.talker.vocab_size:
            raise ValueError(
                f"eos_token_id must be a codec id below {self.config.talker.vocab_size}, got {opts.eos_token_id}"
            )
        params = opts.to_params()
        prompt = build_talker_prompt(
            self, input_ids, instruct_ids, ref_ids, voice_clone_prompt, languages, speakers, non_streaming_mode
        )
        return generate_codes(self, prompt, params, progress=progress, engine=self.fast_engine())

    @torch.inference_mode()
    def extract_speaker_embedding(self, audio: np.ndarray, sr: int) -> torch.Tensor:
        """x-vector [enc_dim] of a mono 24 kHz waveform, in the model dtype (as upstream's)."""
        if self.speaker_encoder is None:
            raise ValueError(
                f"this checkpoint (tts_model_type={self.config.tts_model_type!r}) has no speaker encoder; "
                "only 'base' models can clone a voice"
            )
        sample_rate = self.config.speaker_encoder.sample_rate
        if check_rate(sr, "extract_speaker_embedding") != sample_rate:
            raise ValueError(f"extract_speaker_embedding: audio must be {sample_rate} Hz, got sr={sr}")
        wav = torch.as_tensor(as_waveform(audio, "extract_speaker_embedding")).float()
        if wav.dim() != 1:
            raise ValueError(f"extract_speaker_embedding: expected a 1-D mono waveform, got shape {tuple(wav.shape)}")
        if wav.numel() == 0:
            raise ValueError("extract_speaker_embedding: waveform is empty")
        check_finite(wav.numpy(), "extract_speaker_embedding")
        shortest = min_speaker_samples(self.config.speaker_encoder)
        if wav.numel() < shortest:
            raise ValueError(
                f"extract_speaker_embedding: waveform too short ({wav.numel()} samples); the speaker "
                f"encoder needs at least {shortest} samples ({shortest / sample_rate * 1000:.0f} ms)"
            )
        check_work(speaker_bytes(self.config.speaker_encoder, wav.numel()), "extract_speaker_embedding")
        peak = float(wav.abs().max())
        if peak > 1.0:
            warnings.warn(
                f"waveform exceeds [-1, 1] (peak {peak:.3f}); the speaker encoder expects normalised audio",
                stacklevel=2,
            )
        mels = log_mel_spectrogram(wav[None].to(self.device), sr=sample_rate).transpose(1, 2)
        return self.speaker_encoder(mels.to(self.dtype))[0]


def check_state(model: nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Every parameter present in ``state`` with its shape, and nothing else."""
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


def read_checked_config(directory: Path, verify: str | None = None) -> Qwen3TTSConfig:
    """The config of a standalone directory, checked before any module is built: every listed
    file present at its size (a truncated file is named here, not deep in a reader), or with
    ``verify="sha256"`` its full hash against the manifest's; and the config's sizes against
    the weights' own shapes, from the safetensors headers alone (config_shapes.py)."""
    config_path = directory / "config.json"
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{config_path}: invalid JSON ({e})") from e
    config = Qwen3TTSConfig.from_dict(raw)
    if verify == "sha256":
        verify_hashes(directory)
    else:
        check_sizes(directory)
    with CheckpointReader(directory) as reader:
        check_model_shapes(config, shapes_of(reader.infos), "standalone", str(config_path))
    return config


VERIFY_MODES = (None, "size", "sha256")


def check_load_arguments(path, dtype, device, verify=None) -> None:
    """from_pretrained's arguments, named when wrong (torch would say "Invalid device string"
    for a dtype given as a string, or fail while copying an integer-cast state dict)."""
    if not (verify is None or (isinstance(verify, str) and verify in VERIFY_MODES)):
        raise ValueError(f"verify must be None, 'size' or 'sha256', got {verify!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory or a hub repo id (str or os.PathLike), got {type(path).__name__}")
    if isinstance(dtype, str):
        if dtype not in MODE_NAMES:
            raise ValueError(f"dtype {dtype!r} is not a precision mode; use one of {', '.join(MODE_NAMES)}")
    elif (
        dtype is not None
        and not isinstance(dtype, Precision)
        and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point)
    ):
        raise TypeError(
            f"dtype must be None (keep the stored dtype), a floating torch dtype such as torch.float32 or "
            f"torch.bfloat16, or a mode name ({', '.join(MODE_NAMES)}), got {dtype!r}"
        )
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device ({e})") from None
    if kind == "meta":
        raise ValueError(
            "device 'meta' holds shapes, not weights: a model loaded there cannot run; load on 'cpu' or 'cuda' "
            "(for shapes only, build Qwen3TTS(config) under `with torch.device('meta'):`)"
        )


def min_speaker_samples(cfg, n_fft: int = 1024, hop: int = 256) -> int:
    """The shortest waveform the speaker encoder takes: its "same" reflect-padded convolutions
    need more mel frames than their widest right padding, and the mel front end's reflect
    padding needs more samples than (n_fft - hop) / 2."""
    widest = max(-(-d * (k - 1) // 2) for k, d in zip(cfg.enc_kernel_sizes, cfg.enc_dilations))
    frames = widest + 1
    return max(n_fft - 2 * ((n_fft - hop) // 2) + hop * (frames - 1), (n_fft - hop) // 2 + 1)


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
    if p.is_symlink() or p.parent.is_dir():  # paths before hub ids: a mistyped local path is never fetched
        raise CheckpointError(
            f"{text}: no such directory ({p.parent}/ exists here, so this is read as a local path, not a hub "
            "repo id; to fetch the hub repo of that name, run from a directory without one)"
        )
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
        raise CheckpointError(
            f"{text}: cannot reach {endpoint} (offline?); download it elsewhere and pass the directory"
        )
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
