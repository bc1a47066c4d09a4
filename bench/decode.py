"""Codec decode: audio parity and real-time factor, upstream vs standalone, at the released size.

Builds upstream's Qwen3TTSTokenizerV2Model from the released speech-tokenizer config with the
fixture initialiser (random weights that decode to real amplitudes), hands the same tensors to the
standalone decoder through the codec layout map, and decodes the same codes on both sides:
clips below and above the 300-frame chunk size. Writes reports/decode-benchmark.{md,json}.

    python -m q3tts.bench.decode --out reports/
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from q3tts.bench.generation import environment
from q3tts.standalone.codec import CodecConfig, CodecDecoder
from q3tts.standalone.layout import codec_plan, convert_tensors
from q3tts.verify.compare import audio_diff
from q3tts.verify.fixtures.released import released_speech_tokenizer_config
from q3tts.verify.fixtures.writer import randomize_, tiny_speech_tokenizer_config


def build_codecs(config: dict, seed: int = 0):
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    up = randomize_(Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**copy.deepcopy(config))).eval(), seed)
    cfg = CodecConfig.from_upstream(config)
    state = {k: v for k, v in up.state_dict().items() if k.startswith("decoder.")}
    converted = dict(convert_tensors(codec_plan(cfg), state.__getitem__))
    with torch.device("meta"):
        st = CodecDecoder(cfg)
    st.load_state_dict({k[len("decoder.") :]: v for k, v in converted.items()}, strict=True, assign=True)
    return up, st.eval(), cfg


def bench(name: str, config: dict, lengths: list[int], repeats: int) -> dict:
    up, st, cfg = build_codecs(config)
    rows = []
    for frames in lengths:
        codes = torch.randint(
            0, cfg.codebook_size, (frames, cfg.num_quantizers), generator=torch.Generator().manual_seed(frames)
        )
        with torch.inference_mode():
            up.decode(codes[None])  # warm-up
            t_up, t_st = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                ref = up.decode(codes[None]).audio_values[0].float().numpy()
                t_up.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                got = st.decode([codes])[0]
                t_st.append(time.perf_counter() - t0)
        max_abs, snr = audio_diff(ref, got)
        seconds_audio = frames * cfg.decode_upsample_rate / cfg.output_sample_rate
        rows.append(
            {
                "frames": frames,
                "audio_seconds": seconds_audio,
                "max_abs_diff": max_abs,
                "snr_db": snr,
                "rms": float(np.sqrt(np.mean(ref**2))),
                "upstream_seconds": min(t_up),
                "standalone_seconds": min(t_st),
                "upstream_rtf": min(t_up) / seconds_audio,
                "standalone_rtf": min(t_st) / seconds_audio,
            }
        )
        r = rows[-1]
        print(
            f"[{name}] {frames} frames: max abs {r['max_abs_diff']:.2e}, SNR {r['snr_db']:.1f} dB, "
            f"RTF upstream {r['upstream_rtf']:.3f} standalone {r['standalone_rtf']:.3f}",
            flush=True,
        )
    return {"model": name, "clips": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        "environment": environment(),
        "models": [
            bench("tiny", tiny_speech_tokenizer_config(), [1, 5, 80, 330, 700], args.repeats),
            bench("released size", released_speech_tokenizer_config(), [25, 100, 330], args.repeats),
        ],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode-benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    env = results["environment"]
    lines = [
        "# Codec decode: parity and real-time factor",
        "",
        f"CPU fp32, {env['threads']} threads, torch {env['torch']}, qwen-tts {env['qwen-tts']}. Random weights "
        "(fixture initialiser; real amplitudes); the same codes decoded by upstream's Qwen3TTSTokenizerV2Model.decode "
        "and the standalone decoder (chunks of 300 frames with 25 of left context on both sides). "
        "RTF = decode seconds / audio seconds (lower is faster), best of the repeats.",
        "",
        "| codec | frames | audio s | max abs diff | SNR dB | RMS | upstream RTF | standalone RTF | speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        for r in m["clips"]:
            lines.append(
                f"| {m['model']} | {r['frames']} | {r['audio_seconds']:.2f} | {r['max_abs_diff']:.1e} | "
                f"{r['snr_db']:.1f} | {r['rms']:.3f} | {r['upstream_rtf']:.4f} | {r['standalone_rtf']:.4f} | "
                f"{r['upstream_rtf'] / r['standalone_rtf']:.2f}x |"
            )
    (out / "decode-benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
