"""Speech-tokenizer encode: code parity, real-time factor and peak memory, upstream vs standalone,
at the released tokenizer size (random weights from the fixture initialiser).

Builds upstream's Qwen3TTSTokenizerV2Model from the released speech-tokenizer config, hands the
same tensors to the standalone encoder through the convert-ckpt layout map, and encodes the same
waveforms on both sides (upstream: ``Qwen3TTSTokenizerV2Model.encode``, which is what
``Qwen3TTSTokenizer.encode`` calls after its front end; standalone: ``SpeechEncoder.encode_waveforms``).
Peak memory is the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs)
over the resident size before each call. Writes reports/encode-benchmark.{md,json}.

    python -m q3tts.verify.bench_encode --out reports/
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from q3tts.standalone.codec import CodecConfig
from q3tts.standalone.layout import codec_plan, convert_tensors
from q3tts.standalone.speech_encoder import SpeechEncoder, SpeechEncoderConfig

from .bench_generation import environment
from .encoder_parity import _clip
from .fixtures import randomize_, tiny_speech_tokenizer_config
from .released import released_speech_tokenizer_config


def build_encoders(config: dict, dtype: torch.dtype, seed: int = 0):
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    up = randomize_(Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**copy.deepcopy(config))).eval(), seed)
    ecfg = SpeechEncoderConfig.from_upstream(config)
    state = up.state_dict()
    entries = [e for e in codec_plan(CodecConfig.from_upstream(config), ecfg) if e.target.startswith("encoder.")]
    converted = dict(convert_tensors(entries, state.__getitem__))
    with torch.device("meta"):
        st = SpeechEncoder(ecfg)
    st.load_state_dict({k[len("encoder.") :]: v.clone() for k, v in converted.items()}, strict=True, assign=True)
    up.decoder = None  # not part of encoding
    return up.to(dtype), st.to(dtype).eval(), ecfg


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measured(fn):
    """(result, seconds, peak RSS rise in MB) of fn()."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, seconds, max(0, _rss_kb("VmHWM") - base) / 1024


def bench(name: str, config: dict, seconds_list: list[float], dtype: torch.dtype, repeats: int) -> dict:
    up, st, ecfg = build_encoders(config, dtype)
    rows = []
    for secs in seconds_list:
        wav = _clip(int(secs * 10), secs)
        x = torch.from_numpy(wav)[None].to(dtype)
        mask = torch.ones_like(x, dtype=torch.int32)
        with torch.inference_mode():
            up.encode(x, mask)  # warm-up
            st.encode_waveforms([wav])
            t_up, t_st, m_up, m_st = [], [], [], []
            for _ in range(repeats):
                ref, t, m = measured(lambda x=x, mask=mask: up.encode(x, mask, return_dict=True).audio_codes[0])
                t_up.append(t)
                m_up.append(m)
                got, t, m = measured(lambda wav=wav: st.encode_waveforms([wav])[0])
                t_st.append(t)
                m_st.append(m)
        same = ref.shape == got.shape and torch.equal(ref.cpu(), got)
        rows.append(
            {
                "audio_seconds": secs,
                "frames": int(ref.shape[0]),
                "codes_identical": bool(same),
                "codes_differing": int((ref.cpu() != got).sum()) if ref.shape == got.shape else None,
                "upstream_rtf": min(t_up) / secs,
                "standalone_rtf": min(t_st) / secs,
                "upstream_peak_mb": max(m_up),
                "standalone_peak_mb": max(m_st),
            }
        )
        r = rows[-1]
        print(
            f"[{name} {dtype}] {secs:.0f} s: codes identical {same}, RTF upstream {r['upstream_rtf']:.4f} "
            f"standalone {r['standalone_rtf']:.4f}, peak +{r['upstream_peak_mb']:.0f} / +{r['standalone_peak_mb']:.0f} MB",
            flush=True,
        )
    n_params = sum(p.numel() for p in st.parameters())
    return {"model": name, "dtype": str(dtype).replace("torch.", ""), "parameters": n_params, "clips": rows}


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
            bench("tiny", tiny_speech_tokenizer_config(), [5.0, 30.0], torch.float32, args.repeats),
            bench("released size", released_speech_tokenizer_config(), [5.0, 30.0], torch.float32, args.repeats),
            bench("released size", released_speech_tokenizer_config(), [5.0, 30.0], torch.bfloat16, args.repeats),
        ],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encode-benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    env = results["environment"]
    lines = [
        "# Speech-tokenizer encode: parity, real-time factor, peak memory",
        "",
        f"CPU, {env['threads']} threads, torch {env['torch']}, qwen-tts {env['qwen-tts']}. Random weights "
        "(fixture initialiser) in the released tokenizer config; the same 24 kHz waveform encoded by upstream's "
        "Qwen3TTSTokenizerV2Model.encode and the standalone SpeechEncoder. RTF = encode seconds / audio seconds "
        "(lower is faster), best of the repeats. Peak = rise of the process's peak RSS during the call.",
        "",
        "| encoder | dtype | params | audio s | frames | codes identical | upstream RTF | standalone RTF | speedup | "
        "upstream peak MB | standalone peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        for r in m["clips"]:
            lines.append(
                f"| {m['model']} | {m['dtype']} | {m['parameters'] / 1e6:.1f}M | {r['audio_seconds']:.0f} | "
                f"{r['frames']} | {r['codes_identical']} | {r['upstream_rtf']:.4f} | {r['standalone_rtf']:.4f} | "
                f"{r['upstream_rtf'] / r['standalone_rtf']:.2f}x | {r['upstream_peak_mb']:.0f} | "
                f"{r['standalone_peak_mb']:.0f} |"
            )
    (out / "encode-benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
