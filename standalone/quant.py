"""Weight-only quantization of the fast path: int8 and int4, one scale per group of inputs.

``from_pretrained(..., quant="int8")`` (or "int8-g32", "int8-g64", "int8-g128", "int4", "int4-g32",
"int4-g64", "int4-g128") replaces the transformer linears of the talker and the code predictor (per
layer: fused qkv, output, fused gate/up, down projection) with ``WeightOnlyLinear`` modules that
hold the quantized weight in the layout of the kernels that multiply by them:

- int8: symmetric per group of input channels (64 by default; "int8-g32" is qwentts.cpp's Q8_0
  block), codes -127..127 and one fp32 scale per group. Over one or two rows (the decode steps)
  fast.gemv applies the group scales inside its reduction; over more (a prompt prefill) the weight
  is dequantized to the activations' dtype, a chunk at a time into a per-thread buffer reused from
  layer to layer, and multiplied by F.linear (dequantized to fp32 whatever the activations, the
  0.6B bf16 model's first frame took 632 ms against 175 for plain bf16:
  reports/benchmark-0.6B-int8-groups/fp32-prefill). One scale per output channel, through torch's
  packed ``aten._weight_int8pack_mm``, was this mode until measured against Q8_0: twice Q8_0's
  weight error (mean squared 2.5e-8 against 1.14e-8 on an N(0, 0.02) matrix) and 0.3 points short
  of its agreement with upstream. Measured at 0.6B (reports/int8-groups/reading.md; agreement over
  six requests, Q8_0 0.945; decode loop, per channel 50.9-54.2 ms/frame): groups of 32 agree 0.962
  at 59.8 ms/frame, 64 0.959 at 56.5, 128 0.953 at 54.4. The fp32 scales are bytes the decode loop
  streams (4 per group), hence the default of 64;
- int4: ``aten._weight_int4pack_mm_for_cpu`` on ``aten._convert_weight_to_int4pack_for_cpu``'s
  layout (asymmetric per group of ``group_size`` input channels, 32 by default, qwentts.cpp's Q4_K
  sub-block: w = (q - 8) * scale + zero, q in 0..15, scale and zero fitted per group by fit_int4;
  groups of 32 decode as fast as groups of 128 through this kernel, reports/int4-fit; the kernel
  takes groups of 32, 64, 128 or 256, K divisible by the group and N by 16;
  a linear whose K the asked group does not divide is quantized in the largest smaller group that
  does, named in ``QuantReport.finer_groups``).

No hand-written kernel (inductor generates the int8 reduction) and no extra dependency (torchao was
the first candidate; see the report of issue 28). Activations stay in the model's dtype (fp32 or
bf16). int4's scales are stored in it (its kernel takes them so), int8's in fp32: bf16 scales,
half the bytes, made the 0.6B decode loop 155 ms/frame against 59.8 (groups of 32; the conversion
breaks the loop's vectorization). Codes are rounded against the scale as stored. Everything else
keeps the model's dtype: the logits heads (near-ties decide greedy codes), the norms, the
embeddings, the text and code-predictor input projections, the codec and the speaker encoder. A linear the int4 kernel cannot take in any group (K not a
multiple of 32, or N of 16, as in the tiny test fixture's 16-wide code predictor) stays in the
model's dtype and is named in ``QuantReport.kept``.

A quantized model runs the fast path only: the exact path multiplies by ``weight`` block by block
with upstream's call shapes, and a quantized linear has no such weight (reading it raises, naming
the module's mode). The fidelity of every mode is measured by ``verify-parity --fast --quant``
against the exact fp32 path (verify/cases/fast.py; reports/fast_parity-int8.md, -int4.md).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

INT8_GROUP_SIZES = (32, 64, 128)  # 32: qwentts.cpp's Q8_0 block
DEFAULT_INT8_GROUP = 64
INT4_GROUP_SIZES = (32, 64, 128)
DEFAULT_INT4_GROUP = 32
QUANT_NAMES = (
    ("int8", "int4") + tuple(f"int8-g{g}" for g in INT8_GROUP_SIZES) + tuple(f"int4-g{g}" for g in INT4_GROUP_SIZES)
)
# The transformer linears quantized in every decoder layer (attribute paths inside a DecoderLayer).
LAYER_LINEARS = ("attn.wqkv", "attn.wo", "mlp.w_gate_up", "mlp.w_down")
QUANT_DTYPES = (torch.float32, torch.bfloat16)  # the activation dtypes both kernels take


@dataclass(frozen=True)
class QuantMode:
    name: str  # as the user typed it: "int8", "int8-g32", "int4", "int4-g64"
    bits: int
    group_size: int  # input channels per scale

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
    bits = 8 if name.startswith("int8") else 4
    default = DEFAULT_INT8_GROUP if bits == 8 else DEFAULT_INT4_GROUP
    return QuantMode(name, bits, int(name.split("-g")[1]) if "-g" in name else default)


def quantize_int8(weight: torch.Tensor, group_size: int = DEFAULT_INT8_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (codes int8 [N, K], scales fp32 [N, K / group_size]): symmetric per group of
    ``group_size`` input channels (K must be a multiple: int8_group), rounded as ggml's Q8_0 rounds
    a block of 32: scale = max |w| / 127, the nearest code."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    scales = (w.abs().amax(dim=-1) / 127).clamp(min=1e-12)
    codes = torch.round(w / scales[..., None]).clamp(-127, 127).to(torch.int8)
    return codes.reshape(n, k), scales


def int8_group(in_features: int, group_size: int = DEFAULT_INT8_GROUP) -> int:
    """The group an int8 linear reading ``in_features`` inputs is quantized in: ``group_size``, or
    the largest divisor of it that divides ``in_features`` (a finer group, only more accurate)."""
    return math.gcd(in_features, group_size)


def dequantize_int8(
    codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None
) -> torch.Tensor:
    """codes int8 [N, K] and group scales [N, K / g] -> the weight [N, K] they stand for, computed in
    fp32 and rounded once to ``dtype``; written into ``out`` ([N, K] of ``dtype``) when given.

    Eagerly it runs over DEQUANT_CHUNK_ELEMENTS at a time through one reused fp32 buffer: the same
    bits as the one expression (a product of an exact int8 and an fp32 scale, then one rounding), but
    no weight-sized fp32 temporaries whose fresh pages the kernel faults in (see _DequantScratch)."""
    n, k = codes.shape
    groups = scales.shape[1]
    if torch.compiler.is_compiling():  # traced (compile_prefill): inductor fuses the expression into one pass
        return (codes.float().view(n, groups, -1) * scales.float()[..., None]).view(n, k).to(dtype)
    out = torch.empty(n, k, dtype=dtype, device=codes.device) if out is None else out
    scales = scales.float()
    rows = max(1, DEQUANT_CHUNK_ELEMENTS // k)
    chunk = torch.empty(min(rows, n), groups, k // groups, dtype=torch.float32, device=codes.device)
    for start in range(0, n, rows):
        part = chunk[: min(rows, n - start)]
        torch.mul(
            codes[start : start + rows].view(-1, groups, k // groups), scales[start : start + rows, :, None], out=part
        )
        out[start : start + rows].copy_(part.view(-1, k))
    return out


# Rows of an int8 weight dequantized at a time by dequantize_int8 (4 MB of fp32, in cache).
DEQUANT_CHUNK_ELEMENTS = 2**20


class _DequantScratch(threading.local):
    """One weight-sized buffer per thread and dtype that WeightOnlyLinear dequantizes into before a
    GEMM over many rows, reused from layer to layer: a fresh [N, K] tensor per linear faulted in its
    pages every time (bench/int8_dequant.py, reports/int8-dequant: the 1.7B talker's int8 weights in
    bf16, 2 threads, AMD EPYC). Per thread, so concurrent requests on one model never share it. It
    holds the largest int8 linear a thread has run (a 1.7B talker's fused gate/up: 50 MB in bf16)."""

    def __init__(self):
        self.buffers: dict[torch.dtype, torch.Tensor] = {}

    def weight(self, n: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        buf = self.buffers.get(dtype)
        if buf is None or buf.numel() < n * k or buf.device != device:
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                buf = self.buffers[dtype] = torch.empty(n * k, dtype=dtype, device=device)
        return buf[: n * k].view(n, k)


_DEQUANT_SCRATCH = _DequantScratch()


# The int4 fit (quantize_int4): candidate scales (max - min) / (15 + d) for these d, each refined by
# FIT_REFITS least-squares refits of scale and zero to its own codes; each group keeps the best. On a
# N(0, 0.02) 2048 x 1024 matrix, mean squared error at groups of 32: min-max 2.45e-6, eight refits of
# the min-max pair alone 2.10e-6, this fit 1.93e-6; ggml's Q4_K 2.04e-6 (reports/int4-fit/reading.md).
FIT_STRETCH = (-1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
FIT_REFITS = 4
# The fit is ~100 elementwise passes; over rows of about 1 MB at a time they stay in cache (AMD EPYC,
# 2 threads: a 6144 x 1024 weight's fit 0.65 -> 0.16 s; quantize_model of the 0.6B at bf16, int4,
# 25.1 -> 15.2 s; int8 0.5 s). Groups are independent, so the result is the same bits.
FIT_CHUNK_ELEMENTS = 2**18


def _int4_codes(w, scale, zero):
    """Codes 0..15 of w [.., g] under w ~ q * scale + zero (scale, zero [..])."""
    return torch.round((w - zero[..., None]) / scale[..., None]).clamp(0, 15)


def _int4_refit(w, scale, zero):
    """The least-squares scale and zero for the codes w rounds to now (a group whose codes are all
    equal keeps its pair)."""
    q = _int4_codes(w, scale, zero)
    q_mean, w_mean = q.mean(-1), w.mean(-1)
    dq = q - q_mean[..., None]
    var = (dq * dq).sum(-1)
    fitted = (dq * (w - w_mean[..., None])).sum(-1) / var.clamp(min=1e-30)
    ok = (var > 0) & (fitted > 0)
    scale = torch.where(ok, fitted, scale)
    return scale, torch.where(ok, w_mean - scale * q_mean, zero)


def fit_int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) [.., G] per group of w [.., G, g] fp32, w ~ q * scale + zero with q in 0..15:
    the best of FIT_STRETCH's candidate scales after FIT_REFITS refits each (squared error)."""
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    best_err = torch.full_like(low, float("inf"))
    best_scale, best_zero = ((high - low) / 15).clamp(min=1e-12), low
    for stretch in FIT_STRETCH:
        scale, zero = ((high - low) / (15 + stretch)).clamp(min=1e-12), low
        for _ in range(FIT_REFITS):
            scale, zero = _int4_refit(w, scale, zero)
        err = (_int4_codes(w, scale, zero) * scale[..., None] + zero[..., None] - w).pow(2).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale, best_zero = torch.where(better, scale, best_scale), torch.where(better, zero, best_zero)
    return best_scale, best_zero


def quantize_int4(weight: torch.Tensor, group_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (codes int32 [N, K] in 0..15, scales_and_zeros [K / group, N, 2] in ``dtype``):
    asymmetric per group of ``group_size`` input channels, w ~ (q - 8) * scale + zero, the layout
    aten._weight_int4pack_mm_for_cpu reads. Scale and offset are fitted (fit_int4), then stored in
    ``dtype`` and the codes rounded against the stored pair."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    rows = max(1, FIT_CHUNK_ELEMENTS // k)
    fits = [fit_int4(chunk) for chunk in w.split(rows)]  # w ~ q * scale + offset, q in 0..15
    scale, offset = torch.cat([f[0] for f in fits]), torch.cat([f[1] for f in fits])
    scales = scale.to(dtype)
    zeros = (offset + 8 * scales.float()).to(dtype)
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
    """y = x @ dequant(W).T (no bias: the layers quantized have none): int4 through torch's packed
    CPU kernel, int8 here over the dequantized weight (the fast path's few-row steps multiply the
    codes in fast.gemv instead). ``packed``: int8 codes [N, K] (int8) or the int4 kernel's uint8 layout; ``scales``: fp32
    [N, K / group] (int8) or scales and zeros [K / group, N, 2] in the activation dtype (int4)."""

    def __init__(
        self, packed: torch.Tensor, scales: torch.Tensor, in_features: int, out_features: int, mode, group_size=None
    ):
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.group_size = group_size  # this linear's group (int8_group, int4_group)

    @classmethod
    def from_weight(
        cls, weight: torch.Tensor, mode: QuantMode, dtype: torch.dtype, group_size: int | None = None
    ) -> WeightOnlyLinear:
        """``group_size``: default the mode's."""
        out_features, in_features = weight.shape
        group_size = group_size or mode.group_size
        if mode.bits == 8:
            packed, scales = quantize_int8(weight, group_size)
            return cls(packed, scales, in_features, out_features, mode, group_size)
        codes, scales = quantize_int4(weight, group_size, dtype)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        return cls(packed, scales, in_features, out_features, mode, group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if self.mode.bits == 8:  # many rows (fast.gemv takes one or two): a GEMM on the dequantized weight
            x2 = x.reshape(-1, self.in_features)
            out = F.linear(x2, self._dequantized_for(x2))
        else:
            x2 = x.reshape(-1, self.in_features).to(self.scales.dtype)
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scales)
        return out.to(x.dtype).reshape(*lead, self.out_features)

    def _dequantized_for(self, x: torch.Tensor) -> torch.Tensor:
        """The int8 weight in x's dtype for one GEMM: eagerly in this thread's scratch buffer (valid
        until the thread's next int8 GEMM), traced, or when autograd will keep it for x's gradient, as a
        fresh tensor."""
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and x.requires_grad):
            return dequantize_int8(self.packed, self.scales, x.dtype)
        scratch = _DEQUANT_SCRATCH.weight(self.out_features, self.in_features, x.dtype, x.device)
        return dequantize_int8(self.packed, self.scales, x.dtype, out=scratch)

    def dequantized(self) -> torch.Tensor:
        """The weight [N, K] the kernels multiply by: fp32 for int8, the scales' dtype for int4 (for
        tests and reports)."""
        if self.mode.bits == 8:
            return dequantize_int8(self.packed, self.scales)
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
    finer_groups: dict[str, int] = field(default_factory=dict)  # linears in a smaller group than asked
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
                group = (
                    int4_group(out_f, in_f, mode.group_size) if mode.bits == 4 else int8_group(in_f, mode.group_size)
                )
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
