"""Weight-only quantization of the fast path: int8 per output channel, int4 per group.

``from_pretrained(..., quant="int8")`` (or "int4", "int4-g32", "int4-g64", "int4-g128") replaces
the transformer linears of the talker and the code predictor (per layer: fused qkv, output, fused
gate/up, down projection) with ``WeightOnlyLinear`` modules that hold the quantized weight in the
packed layout of torch's own CPU kernels and multiply through them:

- int8: ``aten._weight_int8pack_mm`` (symmetric, one scale per output channel, codes -127..127);
- int4: ``aten._weight_int4pack_mm_for_cpu`` on ``aten._convert_weight_to_int4pack_for_cpu``'s
  layout (asymmetric per group of ``group_size`` input channels: w = (q - 8) * scale + zero,
  q in 0..15; the kernel takes groups of 32, 64, 128 or 256, K divisible by the group and N by 16;
  a linear whose K the asked group does not divide is quantized in the largest smaller group that
  does, named in ``QuantReport.finer_groups``).

No hand-written kernel and no extra dependency (torchao was the first candidate; see the report of
issue 28). Activations stay in the model's dtype (fp32 or bf16): the scales are stored in it, the
kernels take it as input. Everything else keeps the model's dtype: the logits heads (near-ties
decide greedy codes), the norms, the embeddings, the text and code-predictor input projections,
the codec and the speaker encoder. A linear the int4 kernel cannot take in any group (K not a
multiple of 32, or N of 16, as in the tiny test fixture's 16-wide code predictor) stays in the
model's dtype and is named in ``QuantReport.kept``.

A quantized model runs the fast path only: the exact path multiplies by ``weight`` block by block
with upstream's call shapes, and a quantized linear has no such weight (reading it raises, naming
the module's mode). The fidelity of every mode is measured by ``verify-parity --fast --quant``
against the exact fp32 path (verify/cases/fast.py; reports/fast_parity-int8.md, -int4.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

INT4_GROUP_SIZES = (32, 64, 128)
DEFAULT_INT4_GROUP = 128
QUANT_NAMES = ("int8", "int4") + tuple(f"int4-g{g}" for g in INT4_GROUP_SIZES)
# The transformer linears quantized in every decoder layer (attribute paths inside a DecoderLayer).
LAYER_LINEARS = ("attn.wqkv", "attn.wo", "mlp.w_gate_up", "mlp.w_down")
QUANT_DTYPES = (torch.float32, torch.bfloat16)  # the activation dtypes both kernels take


@dataclass(frozen=True)
class QuantMode:
    name: str  # as the user typed it: "int8", "int4", "int4-g64"
    bits: int
    group_size: int | None  # int4 only

    def __str__(self) -> str:
        return self.name


def parse_quant(name) -> QuantMode | None:
    """A user's quantization name -> QuantMode; None or "none" -> None (no quantization)."""
    if name is None or name == "none":
        return None
    if isinstance(name, QuantMode):
        return name
    if not isinstance(name, str) or name not in QUANT_NAMES:
        raise ValueError(f"quant {name!r} is not one of none, {', '.join(QUANT_NAMES)}")
    if name == "int8":
        return QuantMode(name, 8, None)
    group = int(name.split("-g")[1]) if "-g" in name else DEFAULT_INT4_GROUP
    return QuantMode(name, 4, group)


def quantize_int8(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (codes int8 [N, K], scales [N] in ``dtype``): symmetric per output channel.
    Codes are rounded against the scale as stored (in ``dtype``), so the kernel's product is the
    rounding of the weight the codes stand for."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(dtype)
    codes = torch.round(w / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scales


def quantize_int4(weight: torch.Tensor, group_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (codes int32 [N, K] in 0..15, scales_and_zeros [K / group, N, 2] in ``dtype``):
    asymmetric per group of ``group_size`` input channels, w ~ (q - 8) * scale + zero, the layout
    aten._weight_int4pack_mm_for_cpu reads."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((high - low) / 15).clamp(min=1e-12).to(dtype)
    zeros = (low + 8 * scales.float()).to(dtype)
    codes = torch.round((w - zeros.float()[..., None]) / scales.float()[..., None]) + 8
    codes = codes.clamp(0, 15).to(torch.int32).reshape(n, k)
    return codes, torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous()


def int4_group(out_features: int, in_features: int, group_size: int) -> int | None:
    """The group the CPU int4 kernel quantizes a [out, in] weight in: ``group_size``, else the
    largest smaller one it takes that divides ``in`` (finer groups are only more accurate); None
    when there is none (or ``out`` is not a multiple of 16)."""
    if out_features % 16:
        return None
    fits = [g for g in INT4_GROUP_SIZES if g <= group_size and in_features % g == 0]
    return max(fits) if fits else None


class WeightOnlyLinear(nn.Module):
    """y = x @ dequant(W).T through torch's packed CPU kernels (no bias: the layers quantized have
    none). ``packed``: int8 codes [N, K] (int8) or the int4 kernel's uint8 layout; ``scales``: [N]
    (int8) or scales and zeros [K / group, N, 2] (int4), in the activation dtype."""

    def __init__(
        self, packed: torch.Tensor, scales: torch.Tensor, in_features: int, out_features: int, mode, group_size=None
    ):
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.group_size = group_size  # int4: this linear's group (quant.int4_group)

    @classmethod
    def from_weight(
        cls, weight: torch.Tensor, mode: QuantMode, dtype: torch.dtype, group_size: int | None = None
    ) -> WeightOnlyLinear:
        """``group_size`` (int4): default the mode's."""
        out_features, in_features = weight.shape
        if mode.bits == 8:
            packed, scales = quantize_int8(weight, dtype)
            return cls(packed, scales, in_features, out_features, mode)
        group_size = group_size or mode.group_size
        codes, scales = quantize_int4(weight, group_size, dtype)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        return cls(packed, scales, in_features, out_features, mode, group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.scales.dtype)
        if self.mode.bits == 8:
            out = torch.ops.aten._weight_int8pack_mm(x2, self.packed, self.scales)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scales)
        return out.to(x.dtype).reshape(*lead, self.out_features)

    def dequantized(self) -> torch.Tensor:
        """The weight [N, K] the kernel multiplies by, in the scales' dtype (for tests and reports)."""
        eye = torch.eye(self.in_features, dtype=self.scales.dtype, device=self.scales.device)
        return self.forward(eye).T.contiguous()

    @property
    def weight(self):
        raise RuntimeError(
            f"this linear is weight-only quantized ({self.mode}): only the fast path runs a quantized model "
            "(from_pretrained(..., quant=...) compiles it); load without quant for the exact path"
        )

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, quant={self.mode}{group}"


@dataclass
class QuantReport:
    mode: str
    quantized: list[str] = field(default_factory=list)  # module names now WeightOnlyLinear
    kept: list[str] = field(default_factory=list)  # linears the kernel cannot take, left unquantized
    finer_groups: dict[str, int] = field(default_factory=dict)  # int4 linears in a smaller group than asked
    bytes_before: int = 0  # weight bytes of the quantized linears, before and after
    bytes_after: int = 0


def check_quant_dtype(mode: QuantMode, dtype) -> None:
    """A quantized model's activations are plain fp32 or bf16 (``dtype``: a torch dtype, or a mixed
    precision.Precision, refused)."""
    if dtype not in QUANT_DTYPES:
        raise ValueError(
            f"quant {mode} needs the model in fp32 or bf16 (dtype=torch.float32 or torch.bfloat16), not {dtype}"
        )


def quant_activation_dtype(mode: QuantMode, dtype):
    """The dtype a quantized model loads in: ``dtype`` (checked), fp32 when None (the mode
    verify-parity --fast --quant measures)."""
    dtype = torch.float32 if dtype is None else dtype
    check_quant_dtype(mode, dtype)
    return dtype


def quantize_model(model, mode: QuantMode) -> QuantReport:
    """Replace the talker's and the code predictor's transformer linears of ``model`` (a Qwen3TTS in
    a plain dtype) in place and record ``mode`` and what was quantized and what was kept
    (``model.quant``, ``model.quant_report``, also returned)."""
    check_quant_dtype(mode, model.precision or model.dtype)
    dtype = model.dtype
    report = QuantReport(mode.name)
    for part in ("talker", "code_predictor"):
        for i, layer in enumerate(getattr(model, part).decoder.layers):
            for path in LAYER_LINEARS:
                owner_name, attr = path.split(".")
                owner = getattr(layer, owner_name)
                linear = getattr(owner, attr)
                name = f"{part}.decoder.layers.{i}.{path}"
                out_f, in_f = linear.weight.shape
                group = int4_group(out_f, in_f, mode.group_size) if mode.bits == 4 else None
                if mode.bits == 4 and group is None:
                    report.kept.append(name)
                    continue
                if group is not None and group != mode.group_size:
                    report.finer_groups[name] = group
                q = WeightOnlyLinear.from_weight(linear.weight, mode, dtype, group)
                report.bytes_before += linear.weight.numel() * linear.weight.element_size()
                report.bytes_after += sum(t.numel() * t.element_size() for t in (q.packed, q.scales))
                setattr(owner, attr, q)
                report.quantized.append(name)
    model.quant, model.quant_report = mode, report
    return report
