"""ECAPA-TDNN speaker encoder: log-mel frames [B, T, 128] -> x-vector [B, enc_dim].

Every convolution pads with "same" reflect padding, as upstream's Conv1d(padding="same",
padding_mode="reflect") does: total d*(k-1), the extra sample on the right.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SpeakerEncoderConfig


def reflect_conv(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding="same", padding_mode="reflect")


class TDNN(nn.Module):
    def __init__(self, c_in, c_out, kernel, dilation):
        super().__init__()
        self.conv = reflect_conv(c_in, c_out, kernel, dilation)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Res2Net(nn.Module):
    """Splits channels into ``scale`` chunks; chunk i>1 sees chunk i plus the previous output."""

    def __init__(self, channels, scale, kernel, dilation):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNN(width, width, kernel, dilation) for _ in range(scale - 1))

    def forward(self, x):
        chunks = torch.chunk(x, self.scale, dim=1)
        outs = [chunks[0]]
        prev = None
        for i in range(1, self.scale):
            prev = self.blocks[i - 1](chunks[i] if i == 1 else chunks[i] + prev)
            outs.append(prev)
        return torch.cat(outs, dim=1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels, se_channels):
        super().__init__()
        self.conv1 = reflect_conv(channels, se_channels, 1)
        self.conv2 = reflect_conv(se_channels, channels, 1)

    def forward(self, x):
        s = torch.relu(self.conv1(x.mean(dim=2, keepdim=True)))
        return x * torch.sigmoid(self.conv2(s))


class SERes2NetBlock(nn.Module):
    def __init__(self, c_in, c_out, scale, se_channels, kernel, dilation):
        super().__init__()
        self.tdnn1 = TDNN(c_in, c_out, 1, 1)
        self.res2net_block = Res2Net(c_out, scale, kernel, dilation)
        self.tdnn2 = TDNN(c_out, c_out, 1, 1)
        self.se_block = SqueezeExcite(c_out, se_channels)

    def forward(self, x):
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + x


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and std over time, with global context (every frame is valid)."""

    eps = 1e-12

    def __init__(self, channels, attention_channels):
        super().__init__()
        self.tdnn = TDNN(channels * 3, attention_channels, 1, 1)
        self.conv = reflect_conv(attention_channels, channels, 1)

    def _stats(self, x, w):
        mean = (w * x).sum(2)
        std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(self.eps))
        return mean, std

    def forward(self, x):
        t = x.shape[-1]
        # Uniform weights 1/T, formed the way upstream forms them (mask / mask.sum) for equal rounding.
        ones = torch.ones(x.shape[0], 1, t, dtype=x.dtype, device=x.device)
        mean, std = self._stats(x, ones / ones.sum(dim=2, keepdim=True))
        context = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, t), std.unsqueeze(2).expand(-1, -1, t)], dim=1)
        attn = torch.softmax(self.conv(torch.tanh(self.tdnn(context))), dim=2)
        mean, std = self._stats(x, attn)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


class SpeakerEncoder(nn.Module):
    def __init__(self, cfg: SpeakerEncoderConfig):
        super().__init__()
        ch, ks, dil = cfg.enc_channels, cfg.enc_kernel_sizes, cfg.enc_dilations
        self.blocks = nn.ModuleList([TDNN(cfg.mel_dim, ch[0], ks[0], dil[0])])
        for i in range(1, len(ch) - 1):
            self.blocks.append(
                SERes2NetBlock(ch[i - 1], ch[i], cfg.enc_res2net_scale, cfg.enc_se_channels, ks[i], dil[i])
            )
        self.mfa = TDNN(ch[-1], ch[-1], ks[-1], dil[-1])
        self.asp = AttentiveStatsPool(ch[-1], cfg.enc_attention_channels)
        self.fc = reflect_conv(ch[-1] * 2, cfg.enc_dim, 1)

    def forward(self, mels: torch.Tensor, collect: list | None = None) -> torch.Tensor:
        x = mels.transpose(1, 2)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
            if collect is not None:
                collect.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        x = self.asp(x)
        return self.fc(x).squeeze(-1)
