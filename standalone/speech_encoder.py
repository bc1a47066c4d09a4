"""The 12 Hz speech-tokenizer encoder: 24 kHz audio -> codes [frames, G] (12.5 frames/s).

Stages, in upstream's order (transformers' Mimi encoder as Qwen3TTSTokenizerV2 uses it):
1. conv stack (SEANet): causal conv, then per stride a residual block (ELU, conv k, ELU, conv 1,
   identity shortcut) and ELU + strided conv; ELU + last conv. Zero causal padding. 24 kHz ->
   25 Hz, ``hidden_size`` channels.
2. transformer: pre-LayerNorm layers with RoPE attention and a GELU MLP, each branch multiplied
   by a learned layer scale; full causal attention (the config's sliding window is not applied
   by upstream's SDPA path), no final norm.
3. downsample 25 -> 12.5 Hz: a causal conv (kernel 4, stride 2, no bias) with *replicate*
   padding.
4. split residual VQ: the semantic and the acoustic quantizer both project the same embedding
   (1x1 conv) and quantize their residual group by group with the nearest codebook vector
   (``torch.cdist`` in fp32 over all B*T vectors at once, first index among ties; codebook =
   embed_sum / clamp(cluster_usage, 1e-5)). Only the first ``encoder_valid_num_quantizers``
   groups are computed: later groups never influence earlier ones, and upstream drops them.

Batches are right-padded with zeros, encoded together, and each item is cut to
``ceil(samples / encode_downsample_rate)`` frames, as upstream; so the last frame of a shorter
item may differ from encoding it alone (it sees the padding's activations), exactly as upstream.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import normalize_inputs
from .codec import CausalConv
from .jsonfile import load_json_text
from .layers import Attention, rope_cos_sin, rope_inv_freq
from .work_memory import check_work, encode_bytes


@dataclass(frozen=True)
class SpeechEncoderConfig:
    audio_channels: int
    num_filters: int
    kernel_size: int
    residual_kernel_size: int
    last_kernel_size: int
    num_residual_layers: int
    dilation_growth_rate: int
    compress: int
    upsampling_ratios: tuple[int, ...]
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    norm_eps: float
    rope_theta: float
    num_quantizers: int
    num_semantic_quantizers: int
    codebook_size: int
    codebook_dim: int
    quantizer_dim: int
    downsample_kernel: int  # 0: no downsample (frame rate equals the conv stack's rate)
    valid_num_quantizers: int
    encode_downsample_rate: int
    sample_rate: int  # the rate the encoder takes (preprocessor_config.json sampling_rate)

    @classmethod
    def from_upstream(cls, d: Mapping[str, Any], sample_rate: int = 24000) -> SpeechEncoderConfig:
        """From speech_tokenizer/config.json (upstream's, or the copy a converted checkpoint keeps)."""
        e = d.get("encoder_config") or {}
        unsupported = {
            "use_causal_conv": (e.get("use_causal_conv", True), True),
            "pad_mode": (e.get("pad_mode", "constant"), "constant"),
            "use_conv_shortcut": (e.get("use_conv_shortcut", False), False),
            "hidden_act": (e.get("hidden_act", "gelu"), "gelu"),
            "attention_bias": (e.get("attention_bias", False), False),
            "audio_channels": (e.get("audio_channels", 1), 1),
        }
        for key, (got, want) in unsupported.items():
            if got != want:
                raise ValueError(f"speech_tokenizer encoder_config.{key}={got!r} is not supported (expected {want!r})")
        if isinstance(e.get("residual_kernel_size", 3), list):
            raise ValueError("speech_tokenizer encoder_config.residual_kernel_size as a list is not supported")
        sr = int(e.get("sampling_rate", 24000))
        ratios = tuple(int(r) for r in (e.get("upsampling_ratios") or (8, 6, 5, 4)))
        encodec_rate = math.ceil(sr / math.prod(ratios))
        frame_rate = mimi_frame_rate(e, sr, ratios)
        heads = int(e.get("num_attention_heads", 8))
        hidden = int(e.get("hidden_size", 512))
        nq = int(e.get("num_quantizers", 32))
        valid = int(d.get("encoder_valid_num_quantizers", 16))
        if not 1 <= valid <= nq:
            raise ValueError(f"speech_tokenizer encoder_valid_num_quantizers={valid} must be within 1..{nq}")
        return cls(
            audio_channels=1,
            num_filters=int(e.get("num_filters", 64)),
            kernel_size=int(e.get("kernel_size", 7)),
            residual_kernel_size=int(e.get("residual_kernel_size", 3)),
            last_kernel_size=int(e.get("last_kernel_size", 3)),
            num_residual_layers=int(e.get("num_residual_layers", 1)),
            dilation_growth_rate=int(e.get("dilation_growth_rate", 2)),
            compress=int(e.get("compress", 2)),
            upsampling_ratios=ratios,
            hidden_size=hidden,
            num_hidden_layers=int(e.get("num_hidden_layers", 8)),
            num_attention_heads=heads,
            num_key_value_heads=int(e.get("num_key_value_heads", 8)),
            head_dim=int(e.get("head_dim") or hidden // heads),
            intermediate_size=int(e.get("intermediate_size", 2048)),
            norm_eps=float(e.get("norm_eps", 1e-5)),
            rope_theta=float(e.get("rope_theta", 10000.0)),
            num_quantizers=nq,
            num_semantic_quantizers=int(e.get("num_semantic_quantizers", 1)),
            codebook_size=int(e.get("codebook_size", 2048)),
            # MimiConfig: absent -> 256, null -> hidden_size.
            codebook_dim=int(hidden if e.get("codebook_dim", 256) is None else e.get("codebook_dim", 256)),
            quantizer_dim=int(e.get("vector_quantization_hidden_dimension", 256)),
            downsample_kernel=0 if frame_rate == encodec_rate else 2 * int(encodec_rate / frame_rate),
            valid_num_quantizers=valid,
            encode_downsample_rate=int(d.get("encode_downsample_rate", 1920)),
            sample_rate=int(sample_rate),
        )


def mimi_frame_rate(e: Mapping[str, Any], sampling_rate: int, ratios: tuple[int, ...]) -> float:
    """The encoder's frame rate as transformers' MimiConfig resolves it. ``frame_rate`` is a
    property over ``_frame_rate``, so a saved config (and the published one) carries
    ``"_frame_rate": 12.5``; a hand-written one may say ``frame_rate``. The saved key wins, even
    when null, because it is set after the constructor argument; when neither gives a value the
    rate is derived: sampling_rate / (the conv stack's stride x the downsampling stride 2)."""
    value = e["_frame_rate"] if "_frame_rate" in e else e.get("frame_rate")
    if value is None:
        return sampling_rate / (math.prod(ratios) * 2)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        key = "_frame_rate" if "_frame_rate" in e else "frame_rate"
        raise ValueError(f"speech_tokenizer encoder_config.{key}={value!r} must be a positive number")
    return float(value)


# --------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """x + conv1(ELU(conv_k(ELU(x)))); ``block`` indices follow upstream (0, 2: ELU)."""

    def __init__(self, dim: int, hidden: int, kernel: int, dilation: int):
        super().__init__()
        self.block = nn.ModuleList(
            [nn.ELU(), CausalConv(dim, hidden, kernel, dilation=dilation), nn.ELU(), CausalConv(hidden, dim, 1)]
        )

    def forward(self, x):
        h = x
        for m in self.block:
            h = m(h)
        return x + h


class ConvStack(nn.Module):
    """Waveform [B, 1, L] -> [B, hidden, ceil(L / prod(ratios))]."""

    def __init__(self, cfg: SpeechEncoderConfig):
        super().__init__()
        layers: list[nn.Module] = [CausalConv(cfg.audio_channels, cfg.num_filters, cfg.kernel_size)]
        width = cfg.num_filters
        for ratio in reversed(cfg.upsampling_ratios):
            for j in range(cfg.num_residual_layers):
                layers.append(
                    ResidualBlock(width, width // cfg.compress, cfg.residual_kernel_size, cfg.dilation_growth_rate**j)
                )
            layers += [nn.ELU(), CausalConv(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [nn.ELU(), CausalConv(width, cfg.hidden_size, cfg.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


class EncoderLayer(nn.Module):
    def __init__(self, cfg: SpeechEncoderConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        # SDPA's default scale (upstream passes none), see Attention.
        self.attn = Attention(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            scale=1.0 / math.sqrt(cfg.head_dim),
        )
        self.attn_scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.mlp_scale = nn.Parameter(torch.ones(cfg.hidden_size))

    def forward(self, x, cos, sin, mask):
        x = x + self.attn_scale * self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp_scale * self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class EncoderTransformer(nn.Module):
    def __init__(self, cfg: SpeechEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta)

    def forward(self, x, hook=None):
        """x [B, T, hidden] -> [B, T, hidden]. ``hook(name, tensor)`` sees each layer's output."""
        b, t, _ = x.shape
        cos, sin = rope_cos_sin(self.inv_freq, torch.arange(t, device=x.device)[None], x.dtype)
        # Upstream (transformers 4.57, torch >= 2.6) hands SDPA a materialised boolean causal mask
        # rather than is_causal=True; the two differ in the last bits, so build the same mask.
        mask = self.attention_mask(b, t, x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask)
            if hook is not None:
                hook(f"transformer.layers.{i}", x)
        return x

    @staticmethod
    def attention_mask(b: int, t: int, device) -> torch.Tensor:
        """Full causal boolean mask [B, 1, T, T]: no sliding window (upstream's SDPA path ignores
        the config's ``sliding_window``)."""
        return torch.ones(t, t, dtype=torch.bool, device=device).tril()[None, None].expand(b, 1, t, t)


def nearest_code(x: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row for each row of x [N, D]: Euclidean distance by
    ``torch.cdist`` over all N vectors in one call, in fp32 (its matrix-multiply path; the
    distances, hence the ties argmin breaks to the first index, depend on both)."""
    return torch.cdist(x[None].float(), book[None].float(), p=2)[0].argmin(dim=-1)


class SpeechEncoder(nn.Module):
    def __init__(self, cfg: SpeechEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv_stack = ConvStack(cfg)
        self.transformer = EncoderTransformer(cfg)
        self.downsample = (
            CausalConv(
                cfg.hidden_size, cfg.hidden_size, cfg.downsample_kernel, stride=2, bias=False, pad_mode="replicate"
            )
            if cfg.downsample_kernel
            else None
        )
        dim, q = cfg.quantizer_dim, cfg.num_quantizers
        if dim == cfg.hidden_size:
            raise ValueError(
                "speech tokenizer encoder: vector_quantization_hidden_dimension == hidden_size "
                "(no quantizer projections) is not supported"
            )
        # 1x1 conv projections of the semantic (first) and acoustic (other) quantizers. The output
        # projections serve decoding with the encoder's own codebooks, which Qwen never does; they
        # are kept so the checkpoint round-trips.
        self.semantic_input_proj = nn.Parameter(torch.zeros(dim, cfg.hidden_size, 1))
        self.semantic_output_proj = nn.Parameter(torch.zeros(cfg.hidden_size, dim, 1))
        self.acoustic_input_proj = nn.Parameter(torch.zeros(dim, cfg.hidden_size, 1))
        self.acoustic_output_proj = nn.Parameter(torch.zeros(cfg.hidden_size, dim, 1))
        # All num_quantizers codebooks, semantic first; upstream's unused "initialized" flags too.
        self.codebook_sums = nn.Parameter(torch.zeros(q, cfg.codebook_size, cfg.codebook_dim))
        self.codebook_usage = nn.Parameter(torch.ones(q, cfg.codebook_size))
        self.codebook_initialized = nn.Parameter(torch.ones(q, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.codebook_sums.dtype

    @property
    def device(self) -> torch.device:
        return self.codebook_sums.device

    def codebook(self, g: int) -> torch.Tensor:
        return self.codebook_sums[g] / self.codebook_usage[g].clamp(min=1e-5)[:, None]

    def _quantize(self, emb: torch.Tensor, proj: torch.Tensor, first: int, count: int) -> list[torch.Tensor]:
        """Residual VQ of one branch: emb [B, hidden, T] -> ``count`` code rows [B, T]."""
        residual = F.conv1d(emb, proj)
        b, d, t = residual.shape
        codes = []
        for g in range(first, first + count):
            book = self.codebook(g)
            idx = nearest_code(residual.permute(0, 2, 1).reshape(-1, d), book).view(b, t)
            residual = residual - F.embedding(idx, book).permute(0, 2, 1)
            codes.append(idx)
        return codes

    def forward(self, wav: torch.Tensor, hook=None) -> torch.Tensor:
        """wav [B, 1, L] (model dtype) -> codes [B, valid_num_quantizers, ceil(L / 1920)] int64.

        ``hook(stage, tensor)`` is called with the output of every stage (used by the verifier to
        name the first stage that differs)."""
        cfg = self.cfg
        h = self.conv_stack(wav)
        if hook is not None:
            hook("conv_stack", h)
        h = self.transformer(h.transpose(1, 2), hook).transpose(1, 2)
        if self.downsample is not None:
            h = self.downsample(h)
        if hook is not None:
            hook("downsample", h)
        n_sem = min(cfg.num_semantic_quantizers, cfg.valid_num_quantizers)
        codes = self._quantize(h, self.semantic_input_proj, 0, n_sem)
        if cfg.valid_num_quantizers > n_sem:
            codes += self._quantize(
                h, self.acoustic_input_proj, cfg.num_semantic_quantizers, cfg.valid_num_quantizers - n_sem
            )
        out = torch.stack(codes, dim=1)
        if hook is not None:
            hook("quantizer", out)
        return out

    @torch.inference_mode()
    def encode(self, audio, sr: int | None = None, max_work_bytes: int | str | None = None) -> list[torch.Tensor]:
        """Codes [frames, G] (int64, CPU) per item, as upstream's ``Qwen3TTSTokenizer.encode``.

        ``audio``: a path, an array with ``sr``, an ``(array, sr)`` pair, or a list of these (one
        right-padded batch). ``max_work_bytes``: the cap of the estimated memory (work_memory.py)."""
        wavs = normalize_inputs(audio, sr, self.cfg.sample_rate)
        return self.encode_waveforms(wavs, max_work_bytes=max_work_bytes)

    @torch.inference_mode()
    def encode_waveforms(
        self, wavs: list[np.ndarray], hook=None, max_work_bytes: int | str | None = None
    ) -> list[torch.Tensor]:
        """float32 mono waveforms already at the encoder's rate -> codes [frames, G] per item;
        refused before the batch is made when its estimated memory is above the cap."""
        lengths = [int(w.shape[0]) for w in wavs]
        seconds = max(lengths) / self.cfg.sample_rate
        check_work(
            encode_bytes(self.cfg, len(wavs), max(lengths)),
            f"encoding {len(wavs)} item(s) of up to {seconds:.0f} s",
            max_work_bytes,
        )
        batch = torch.zeros(len(wavs), 1, max(lengths), dtype=torch.float32)
        for i, w in enumerate(wavs):
            batch[i, 0, : lengths[i]] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        codes = self(batch.to(device=self.device, dtype=self.dtype), hook)
        rate = self.cfg.encode_downsample_rate
        return [codes[i, :, : -(-n // rate)].transpose(0, 1).contiguous().cpu() for i, n in enumerate(lengths)]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_speech_encoder_config(directory: Path) -> SpeechEncoderConfig:
    path = directory / "config.json"
    try:
        raw = load_json_text(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the speech tokenizer config ({e})") from e
    if raw.get("model_type") != "qwen3_tts_tokenizer_12hz":
        raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not the 12 Hz tokenizer")
    sample_rate = 24000
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        try:
            sample_rate = int(load_json_text(pre.read_text(encoding="utf-8")).get("sampling_rate", 24000))
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{pre}: cannot read the sampling rate ({e})") from e
    try:
        return SpeechEncoderConfig.from_upstream(raw, sample_rate)
    except (TypeError, KeyError) as e:
        raise ValueError(f"{path}: malformed encoder_config ({e})") from e


def load_speech_encoder(checkpoint_dir: Path | None, dtype: torch.dtype | None, device) -> SpeechEncoder:
    """The encoder of ``checkpoint_dir/speech_tokenizer``, strict: every ``encoder.*`` tensor of
    the file is used and every module tensor is present with the shape the config implies."""
    from .checkpoint import CheckpointError, CheckpointReader, load_state_dict
    from .config_shapes import check_encoder_shapes, shapes_of

    if checkpoint_dir is None:
        raise CheckpointError("this model was not loaded from a checkpoint directory, so it has no speech tokenizer")
    directory = Path(checkpoint_dir) / "speech_tokenizer"
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: missing; the checkpoint has no speech tokenizer to encode audio with")
    cfg = load_speech_encoder_config(directory)
    with CheckpointReader(directory) as reader:  # headers only: the config's sizes before any module
        check_encoder_shapes(cfg, shapes_of(reader.infos), "standalone", str(directory / "config.json"))
    state = {
        k[len("encoder.") :]: v
        for k, v in load_state_dict(directory, dtype=dtype, device=device).items()
        if k.startswith("encoder.")
    }
    if not state:
        raise CheckpointError(f"{directory}: no encoder.* tensors; this speech tokenizer cannot encode audio")
    with torch.device("meta"):
        model = SpeechEncoder(cfg)
    expected = set(model.state_dict())
    if "encoder.layers.0.conv.weight" in state:  # upstream's name for the first conv
        raise CheckpointError(
            f"{directory}: the encoder tensors are in upstream's layout (converted by convert-ckpt < 0.3, which "
            "carried them unchanged); convert the upstream checkpoint again"
        )
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: encoder weights do not match: missing {missing[:4]} unexpected {unexpected[:4]}"
        )
    for name, p in model.state_dict().items():
        if tuple(state[name].shape) != tuple(p.shape):
            raise CheckpointError(
                f"{directory}: encoder.{name} has shape {tuple(state[name].shape)}, config implies {tuple(p.shape)}"
            )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
