"""The 12 Hz speech-tokenizer decoder (Qwen3TTSTokenizerV2): codes [B, T, 16] -> 24 kHz audio.

Stages, in upstream's order and with its numerics: RVQ decode (codebook = embedding_sum /
clamp(cluster_usage, 1e-5); one semantic quantizer and 15 acoustic ones, each group projected by
a 1x1 conv) -> causal conv -> 8-layer sliding-window transformer with layer scale -> 2 x
(causal transposed conv + ConvNeXt) -> causal conv -> 4 SnakeBeta decoder blocks -> SnakeBeta ->
causal conv -> clamp to [-1, 1]. Long inputs are decoded in 300-frame chunks with 25 frames of
left context, exactly as upstream does (chunking changes the samples near chunk boundaries).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .jsonfile import load_json_text
from .layers import Attention, RMSNorm, rope_cos_sin, rope_inv_freq, split_linear
from .work_memory import check_work, decode_bytes


@dataclass(frozen=True)
class CodecConfig:
    latent_dim: int
    codebook_dim: int
    codebook_size: int
    decoder_dim: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    sliding_window: int
    num_quantizers: int
    upsample_rates: tuple[int, ...]
    upsampling_ratios: tuple[int, ...]
    decode_upsample_rate: int
    output_sample_rate: int

    @classmethod
    def from_upstream(cls, d: Mapping[str, Any]) -> CodecConfig:
        if d.get("model_type") != "qwen3_tts_tokenizer_12hz":
            raise ValueError(
                f"speech_tokenizer/config.json: model_type {d.get('model_type')!r} is not the 12 Hz tokenizer"
            )
        dec = d["decoder_config"]
        heads = dec.get("num_attention_heads", 16)
        hidden = dec.get("hidden_size", 1024)
        if dec.get("hidden_act", "silu") != "silu":
            raise ValueError("speech_tokenizer decoder_config.hidden_act must be silu")
        return cls(
            latent_dim=dec.get("latent_dim", 1024),
            codebook_dim=dec["codebook_dim"],
            codebook_size=dec.get("codebook_size", 2048),
            decoder_dim=dec.get("decoder_dim", 1536),
            hidden_size=hidden,
            intermediate_size=dec.get("intermediate_size", 3072),
            num_hidden_layers=dec.get("num_hidden_layers", 8),
            num_attention_heads=heads,
            num_key_value_heads=dec.get("num_key_value_heads", 16),
            head_dim=dec.get("head_dim") or hidden // heads,
            rms_norm_eps=float(dec.get("rms_norm_eps", 1e-5)),
            rope_theta=float(dec.get("rope_theta", 10000)),
            sliding_window=int(dec.get("sliding_window", 72)),
            num_quantizers=dec.get("num_quantizers", 16),
            upsample_rates=tuple(dec.get("upsample_rates", (8, 5, 4, 3))),
            upsampling_ratios=tuple(dec.get("upsampling_ratios", (2, 2))),
            decode_upsample_rate=d.get("decode_upsample_rate", 1920),
            output_sample_rate=d.get("output_sample_rate", 24000),
        )

    @property
    def total_upsample(self) -> int:
        return int(np.prod(self.upsample_rates + self.upsampling_ratios))


# --------------------------------------------------------------------------------------------
class CausalConv(nn.Module):
    """Conv1d with left padding (k_eff - stride) and the right padding that makes the output
    length ceil(L / stride). ``pad_mode`` is "constant" (zeros; every conv of the decoder and of
    the encoder's conv stack) or "replicate" (the encoder's 25 -> 12.5 Hz downsample)."""

    def __init__(self, c_in, c_out, kernel, dilation=1, stride=1, groups=1, bias=True, pad_mode="constant"):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"CausalConv: unsupported pad_mode {pad_mode!r}")
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, dilation=dilation, groups=groups, bias=bias)
        self.stride = stride
        self.kernel_eff = (kernel - 1) * dilation + 1
        self.padding = self.kernel_eff - stride
        self.pad_mode = pad_mode

    def forward(self, x):
        length = x.shape[-1]
        n_frames = (length - self.kernel_eff + self.padding) / self.stride + 1
        ideal = (math.ceil(n_frames) - 1) * self.stride + (self.kernel_eff - self.padding)
        if self.pad_mode == "constant":
            x = F.pad(x, (self.padding, ideal - length), mode="constant", value=0)
        else:
            x = F.pad(x, (self.padding, ideal - length), mode=self.pad_mode)
        return self.conv(x).contiguous()


class CausalTransConv(nn.Module):
    """ConvTranspose1d, then drop (kernel - stride) samples on the right."""

    def __init__(self, c_in, c_out, kernel, stride):
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel, stride=stride)
        self.trim = kernel - stride

    def forward(self, x):
        x = self.conv(x)
        if self.trim > 0:
            x = x[..., : x.shape[-1] - self.trim]
        return x.contiguous()


class SnakeBeta(nn.Module):
    """x + 1/(exp(beta) + 1e-9) * sin(x * exp(alpha))^2, per channel (parameters in log scale)."""

    def __init__(self, channels):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        alpha = torch.exp(self.alpha.unsqueeze(0).unsqueeze(-1))
        beta = torch.exp(self.beta.unsqueeze(0).unsqueeze(-1))
        return x + (1.0 / (beta + 1e-9)) * torch.pow(torch.sin(x * alpha), 2)


class ConvNeXt(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = self.dwconv(x).permute(0, 2, 1)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).permute(0, 2, 1)


class ResidualUnit(nn.Module):
    def __init__(self, dim, dilation):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)

    def forward(self, x):
        return self.conv2(self.act2(self.conv1(self.act1(x)))) + x


class DecoderBlock(nn.Module):
    def __init__(self, c_in, c_out, rate):
        super().__init__()
        self.block = nn.ModuleList(
            [SnakeBeta(c_in), CausalTransConv(c_in, c_out, 2 * rate, rate)]
            + [ResidualUnit(c_out, d) for d in (1, 3, 9)]
        )

    def forward(self, x):
        for m in self.block:
            x = m(x)
        return x


# --------------------------------------------------------------------------------------------
class CodecLayer(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
        self.attn_scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.w_gate_up = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.w_down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.mlp_scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.inter = cfg.intermediate_size

    def forward(self, x, cos, sin, mask):
        x = x + self.attn_scale * self.attn(self.attn_norm(x), cos, sin, mask)
        gate, up = split_linear(self.mlp_norm(x), self.w_gate_up.weight, (self.inter, self.inter))
        return x + self.mlp_scale * self.w_down(F.silu(gate) * up)


class CodecTransformer(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.window = cfg.sliding_window
        self.input_proj = nn.Linear(cfg.latent_dim, cfg.hidden_size)
        self.layers = nn.ModuleList(CodecLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.output_proj = nn.Linear(cfg.hidden_size, cfg.latent_dim)
        self.inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta)

    def forward(self, x):
        x = self.input_proj(x)
        b, t, _ = x.shape
        cos, sin = rope_cos_sin(self.inv_freq, torch.arange(t, device=x.device)[None], x.dtype)
        # Within the window a plain causal SDPA call, as upstream; beyond it an explicit mask
        # (key within the last `window` positions up to the query).
        mask = None
        if t >= self.window:
            q = torch.arange(t, device=x.device)[:, None]
            kv = torch.arange(t, device=x.device)[None, :]
            mask = ((kv <= q) & (kv > q - self.window))[None, None].expand(b, 1, t, t)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.output_proj(self.norm(x))


class CodecDecoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.codebook_dim // 2
        self.codebook_sums = nn.Parameter(torch.zeros(cfg.num_quantizers, cfg.codebook_size, dim))
        self.codebook_usage = nn.Parameter(torch.ones(cfg.num_quantizers, cfg.codebook_size))
        # Conv1d(1x1) projections of the semantic (first) and acoustic (other) quantizer groups.
        # The input projections belong to the encoder side of the quantizer; they are kept so a
        # round trip restores them, and are unused when decoding.
        self.semantic_input_proj = nn.Parameter(torch.zeros(dim, cfg.codebook_dim, 1))
        self.semantic_output_proj = nn.Parameter(torch.zeros(cfg.codebook_dim, dim, 1))
        self.acoustic_input_proj = nn.Parameter(torch.zeros(dim, cfg.codebook_dim, 1))
        self.acoustic_output_proj = nn.Parameter(torch.zeros(cfg.codebook_dim, dim, 1))
        self.pre_conv = CausalConv(cfg.codebook_dim, cfg.latent_dim, 3)
        self.transformer = CodecTransformer(cfg)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv(cfg.latent_dim, cfg.latent_dim, r, r), ConvNeXt(cfg.latent_dim)])
            for r in cfg.upsampling_ratios
        )
        blocks: list[nn.Module] = [CausalConv(cfg.latent_dim, cfg.decoder_dim, 7)]
        for i, rate in enumerate(cfg.upsample_rates):
            blocks.append(DecoderBlock(cfg.decoder_dim // 2**i, cfg.decoder_dim // 2 ** (i + 1), rate))
        out_dim = cfg.decoder_dim // 2 ** len(cfg.upsample_rates)
        blocks += [SnakeBeta(out_dim), CausalConv(out_dim, 1, 7)]
        self.decoder = nn.ModuleList(blocks)

    def _quantizer_sum(self, codes: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """Sum of the codebook vectors of groups first..first+count-1; codes [B, G, T] -> [B, D, T]."""
        total = torch.zeros([1], device=codes.device)[0]  # upstream starts from a 0-d fp32 zero
        for g in range(first, first + count):
            book = self.codebook_sums[g] / self.codebook_usage[g].clamp(min=1e-5)[:, None]
            total = total + F.embedding(codes[:, g], book).transpose(1, 2)
        return total

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, G, T] (non-negative) -> waveform [B, 1, T * total_upsample] in [-1, 1]."""
        if codes.shape[1] != self.cfg.num_quantizers:
            raise ValueError(f"expected {self.cfg.num_quantizers} code groups, got {codes.shape[1]}")
        h = F.conv1d(self._quantizer_sum(codes, 0, 1), self.semantic_output_proj)
        h += F.conv1d(self._quantizer_sum(codes, 1, self.cfg.num_quantizers - 1), self.acoustic_output_proj)
        h = self.pre_conv(h).transpose(1, 2)
        h = self.transformer(h).permute(0, 2, 1)
        for pair in self.upsample:
            for m in pair:
                h = m(h)
        for m in self.decoder:
            h = m(h)
        return h.clamp(min=-1, max=1)

    def chunked(
        self, codes: torch.Tensor, chunk_size: int = 300, left_context: int = 25, on_chunk=None
    ) -> torch.Tensor:
        """``on_chunk(frames)`` is called after each chunk with the frames it decoded (progress)."""
        wavs = []
        start = 0
        while start < codes.shape[-1]:
            end = min(start + chunk_size, codes.shape[-1])
            context = left_context if start - left_context > 0 else start
            wav = self(codes[..., start - context : end])
            wavs.append(wav[..., context * self.cfg.total_upsample :])
            if on_chunk is not None:
                on_chunk(end - start)
            start = end
        return torch.cat(wavs, dim=-1)

    def check_codes(self, codes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Validate per-item codes [T, G] and return them as int64 tensors.

        Upstream's padding is kept: trailing frames that are all -1 are padding (what
        pad_sequence(padding_value=-1) produces) and yield no samples. Any other negative code,
        a code past the codebook, a float or bool dtype, or a wrong shape is an error naming the
        item and the value. An item with no frames decodes to no samples (as upstream does for an
        empty item of a batch).
        """
        out = []
        for i, c in enumerate(codes):
            t = torch.as_tensor(c)
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"codes[{i}] must hold integer codes, got dtype {t.dtype}")
            if t.dim() != 2 or t.shape[1] != self.cfg.num_quantizers:
                raise ValueError(f"codes[{i}] must be [frames, {self.cfg.num_quantizers}], got shape {tuple(t.shape)}")
            t = t.long()
            real = ~(t == -1).all(dim=1)
            n_real = int(real.nonzero().max()) + 1 if bool(real.any()) else 0  # frames before the trailing padding
            body = t[:n_real]
            if body.numel() and (int(body.min()) < 0 or int(body.max()) >= self.cfg.codebook_size):
                bad = int(body.min()) if int(body.min()) < 0 else int(body.max())
                frame, group = (((body < 0) | (body >= self.cfg.codebook_size)).nonzero()[0]).tolist()
                raise ValueError(
                    f"codes[{i}] has code {bad} at frame {frame}, group {group}; codes must be in "
                    f"0..{self.cfg.codebook_size - 1} (-1 only as whole trailing padding frames)"
                )
            out.append(t)
        return out

    @torch.inference_mode()
    def decode(
        self,
        codes: Sequence[torch.Tensor],
        max_frames: int | None = None,
        progress: bool | None = None,
        max_work_bytes: int | str | None = None,
    ) -> list[np.ndarray]:
        """Per item codes [T, G] -> float32 waveforms, as upstream's Qwen3TTSTokenizer.decode.
        ``max_frames``: refuse items longer than this before decoding anything (None: no cap).
        ``progress``: a bar over frames (None: when stderr is a terminal and the decode is long).
        ``max_work_bytes``: refuse, from the shapes alone, a decode whose estimated memory is above
        this cap (work_memory.py; default Q3TTS_MAX_WORK_BYTES, else half the RAM)."""
        device = self.codebook_sums.device
        self.check_work(codes, max_work_bytes)
        items = self.check_codes(codes)
        if not items:
            raise ValueError("codes is empty: give at least one [frames, G] item")
        longest = max(c.shape[0] for c in items)
        self.check_frames(longest, max_frames)
        if longest == 0:
            return [np.zeros(0, np.float32) for _ in items]
        padded = torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=-1).to(device)
        lengths = (padded[..., 0] > -1).sum(1) * self.cfg.decode_upsample_rate
        with decode_progress(longest, progress) as bar:
            wav = self.chunked(torch.clamp(padded, min=0).transpose(1, 2), on_chunk=bar).squeeze(1)
        return [w[:n].to(torch.float32).cpu().numpy() for w, n in zip(wav, lengths)]

    def check_work(self, codes: Sequence, max_work_bytes: int | str | None) -> None:
        """The decode's estimated memory from the items' shapes (no copy of them), against the cap;
        an item of the wrong shape is left to check_codes."""
        lengths = [
            c.shape[0] if len(getattr(c, "shape", ())) == 2 else len(c) if isinstance(c, (list, tuple)) else 0
            for c in codes
        ]
        frames = max(lengths, default=0)
        what = f"decoding {len(lengths)} item(s) of up to {frames} frames"
        check_work(decode_bytes(self.cfg, len(lengths), frames), what, max_work_bytes)

    def check_frames(self, frames: int, max_frames: int | None) -> None:
        if max_frames is None:
            return
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
        if frames > max_frames:
            seconds = frames * self.cfg.decode_upsample_rate / self.cfg.output_sample_rate
            raise ValueError(
                f"codes have {frames} frames ({seconds:.0f} s of audio), above max_frames={max_frames}; "
                "decode them in parts or raise max_frames"
            )


# A decode of more frames than this shows a bar by default (when stderr is a terminal): at 12.5
# frames a second, about 4 minutes of audio.
PROGRESS_FRAMES = 3000


@contextlib.contextmanager
def decode_progress(frames: int, progress: bool | None):
    """A callable taking decoded frames (a tqdm bar's update, or a no-op) for CodecDecoder.chunked."""
    if progress is None:
        progress = frames > PROGRESS_FRAMES and sys.stderr.isatty()
    if not progress:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=frames, unit="frame", desc="decode") as bar:
        yield bar.update


def load_codec_config(directory: Path) -> CodecConfig:
    path = directory / "config.json"
    try:
        raw = load_json_text(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the speech tokenizer config ({e})") from e
    return CodecConfig.from_upstream(raw)


def load_codec(checkpoint_dir: Path | None, dtype: torch.dtype, device) -> CodecDecoder:
    """The decoder of ``checkpoint_dir/speech_tokenizer`` (standalone layout, written by
    convert-ckpt). Strict: every decoder tensor present and used; encoder tensors are skipped."""
    from .checkpoint import CheckpointError, CheckpointReader, load_state_dict
    from .config_shapes import check_codec_shapes, shapes_of

    if checkpoint_dir is None:
        raise CheckpointError("this model was not loaded from a checkpoint directory, so it has no speech tokenizer")
    directory = Path(checkpoint_dir) / "speech_tokenizer"
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: missing; the checkpoint has no speech tokenizer to decode codes with")
    cfg = load_codec_config(directory)
    with CheckpointReader(directory) as reader:  # headers only: the config's sizes before any module
        check_codec_shapes(cfg, shapes_of(reader.infos), "standalone", str(directory / "config.json"))
    state = {
        k[len("decoder.") :]: v
        for k, v in load_state_dict(directory, dtype=dtype, device=device).items()
        if k.startswith("decoder.")
    }
    with torch.device("meta"):
        model = CodecDecoder(cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        hint = " (was speech_tokenizer/ converted? run convert-ckpt on the upstream checkpoint)" if missing else ""
        raise CheckpointError(
            f"{directory}: decoder weights do not match: missing {missing[:4]} unexpected {unexpected[:4]}{hint}"
        )
    for name, p in model.state_dict().items():
        if tuple(state[name].shape) != tuple(p.shape):
            raise CheckpointError(
                f"{directory}: decoder.{name} has shape {tuple(state[name].shape)}, config implies {tuple(p.shape)}"
            )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
