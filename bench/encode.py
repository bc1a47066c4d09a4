"""Speech-tokenizer encode: code parity, real-time factor and peak memory, upstream vs standalone,
at the released tokenizer size (random weights from the fixture initialiser).

The parent writes one random 12 Hz tokenizer at the released config twice: in upstream's format
(``save_pretrained``) and in the standalone layout (the convert-ckpt codec plan, decoder and
encoder, as ``speech_tokenizer/`` of a converted checkpoint). Each measurement then runs in a
fresh child process that loads one side the way its package loads it (upstream:
``Qwen3TTSTokenizerV2Model.from_pretrained(dtype=...)``, what ``Qwen3TTSTokenizer`` calls;
standalone: ``load_speech_encoder``, what ``Qwen3TTS.encode_audio`` calls) and encodes one clip
(upstream: ``Qwen3TTSTokenizerV2Model.encode``, what ``Qwen3TTSTokenizer.encode`` runs after its
front end; standalone: ``SpeechEncoder.encode_waveforms``). The standalone child imports neither
transformers nor qwen_tts. Per child:

- loaded MB: resident size after loading (torch, the package, the tokenizer weights);
- encode peak MB: rise of the peak RSS (VmHWM, reset through /proc/self/clear_refs after loading)
  over the loaded size, during the first encode call;
- process peak MB: the child's lifetime peak RSS (VmHWM before the reset and after the calls);
- RTF: best of ``--repeats`` timed calls after the first, / audio seconds.

Writes reports/encode-benchmark.{md,json}.

    python -m q3tts.bench.encode --out reports/
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from q3tts.verify.cases.encoder import speech_clip

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def write_tokenizers(config: dict, root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(upstream directory, standalone checkpoint directory) of one random tokenizer."""
    from safetensors.torch import save_file

    from q3tts.standalone.codec import CodecConfig
    from q3tts.standalone.layout import codec_plan, convert_tensors
    from q3tts.standalone.speech_encoder import SpeechEncoderConfig
    from q3tts.verify.fixtures.writer import build_upstream_codec, randomize_

    model = randomize_(build_upstream_codec(config).eval(), seed)
    up_dir, st_dir = root / "upstream", root / "standalone"
    model.save_pretrained(up_dir)
    state = model.state_dict()
    plan = codec_plan(CodecConfig.from_upstream(config), SpeechEncoderConfig.from_upstream(config))
    (st_dir / "speech_tokenizer").mkdir(parents=True)
    converted = {k: v.contiguous() for k, v in convert_tensors(plan, state.__getitem__)}
    save_file(converted, str(st_dir / "speech_tokenizer" / "model.safetensors"), metadata={"format": "pt"})
    (st_dir / "speech_tokenizer" / "config.json").write_text(json.dumps(copy.deepcopy(config), indent=2))
    return up_dir, st_dir


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _load_side(side: str, directory: Path, dtype: torch.dtype):
    """A function wav -> codes [frames, G] for one side, loaded as its package loads it."""
    if side == "upstream":
        from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

        model = Qwen3TTSTokenizerV2Model.from_pretrained(str(directory), dtype=dtype).eval()

        def run(wav):
            x = torch.from_numpy(wav)[None].to(dtype)
            return model.encode(x, torch.ones_like(x, dtype=torch.int32), return_dict=True).audio_codes[0]

        return run
    from q3tts.standalone.speech_encoder import load_speech_encoder

    encoder = load_speech_encoder(directory, dtype, "cpu")
    return lambda wav: encoder.encode_waveforms([wav])[0]


def child(side: str, directory: str, dtype_name: str, seconds: float, repeats: int, threads: int, out: str) -> dict:
    """One side, one clip, in this (fresh) process: load, encode cold (memory), then time."""
    torch.set_num_threads(threads)
    run = _load_side(side, Path(directory), DTYPES[dtype_name])
    wav = speech_clip(int(seconds * 10), seconds)
    gc.collect()
    loaded, load_peak = _status_kb("VmRSS"), _status_kb("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    base = _status_kb("VmRSS")
    with torch.inference_mode():
        codes = run(wav)
        peak = _status_kb("VmHWM")
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(wav)
            times.append(time.perf_counter() - t0)
    np.save(out, codes.cpu().numpy())
    blocked = sorted({m.split(".")[0] for m in sys.modules} & {"transformers", "qwen_tts"})
    if side == "standalone" and blocked:
        raise RuntimeError(f"the standalone child imported {blocked}")
    return {
        "loaded_mb": loaded / 1024,
        "encode_peak_mb": max(0, peak - base) / 1024,
        # Not ru_maxrss: exec carries the forked parent's peak into it (and clear_refs does not reset it).
        "process_peak_mb": max(load_peak, peak, _status_kb("VmHWM")) / 1024,
        "seconds": min(times),
    }


def measure(side: str, directory: Path, dtype_name: str, seconds: float, repeats: int, threads: int, tmp: Path):
    """(child's numbers, codes) from a fresh interpreter."""
    out = tmp / f"{side}-{dtype_name}-{seconds}.npy"
    args = [side, str(directory), dtype_name, str(seconds), str(repeats), str(threads), str(out)]
    r = subprocess.run([sys.executable, "-m", "q3tts.bench.encode", "--child", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{side} child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), np.load(out)


def bench(name: str, config: dict, seconds_list, dtype_names, repeats: int, threads: int, tmp: Path) -> list[dict]:
    up_dir, st_dir = write_tokenizers(config, tmp / name.replace(" ", "-"))
    n_params = _encoder_parameters(st_dir)
    models = []
    for dn in dtype_names:
        rows = []
        for secs in seconds_list:
            up, ref = measure("upstream", up_dir, dn, secs, repeats, threads, tmp)
            st, got = measure("standalone", st_dir, dn, secs, repeats, threads, tmp)
            same = ref.shape == got.shape and bool((ref == got).all())
            row = {
                "audio_seconds": secs,
                "frames": int(ref.shape[0]),
                "codes_identical": same,
                "codes_differing": int((ref != got).sum()) if ref.shape == got.shape else None,
                "codes": int(ref.size),
                "upstream_rtf": up["seconds"] / secs,
                "standalone_rtf": st["seconds"] / secs,
                **{f"upstream_{k}": v for k, v in up.items() if k != "seconds"},
                **{f"standalone_{k}": v for k, v in st.items() if k != "seconds"},
            }
            rows.append(row)
            print(
                f"[{name} {dn}] {secs:.0f} s: codes identical {same}, RTF {row['upstream_rtf']:.4f} / "
                f"{row['standalone_rtf']:.4f}, encode peak {up['encode_peak_mb']:.0f} / {st['encode_peak_mb']:.0f} MB, "
                f"process peak {up['process_peak_mb']:.0f} / {st['process_peak_mb']:.0f} MB",
                flush=True,
            )
        models.append({"model": name, "dtype": dn, "parameters": n_params, "clips": rows})
    return models


def _encoder_parameters(st_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(st_dir / "speech_tokenizer" / "model.safetensors"), "pt") as f:
        return sum(_numel(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("encoder."))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def render(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Speech-tokenizer encode: parity, real-time factor, peak memory",
        "",
        f"CPU ({env['cores']} cores), {env['threads']} threads, torch {env['torch']}, qwen-tts {env['qwen-tts']}. "
        "Random weights (fixture initialiser) in the released tokenizer config, stored in upstream's format and in "
        "the standalone layout. Every number comes from a fresh child process per side and clip that loads the "
        "tokenizer as its package does (upstream: `Qwen3TTSTokenizerV2Model.from_pretrained(dtype=...)`, encoder "
        "and decoder; standalone: `load_speech_encoder`, which reads the converted file and keeps the encoder) and "
        "encodes the same 24 kHz waveform (upstream: `Qwen3TTSTokenizerV2Model.encode`; standalone: "
        "`SpeechEncoder.encode_waveforms`). RTF = encode seconds / audio seconds (lower is faster), best of "
        f"{results['repeats']} calls after a first one. Loaded = RSS after loading; encode peak = rise of the peak "
        "RSS over that during the first encode call; process peak = the child's lifetime peak RSS "
        "(VmHWM; torch alone is about 500 MB). MB = 2^20 bytes. Upstream / standalone in each cell.",
        "",
        "| encoder | dtype | params | audio s | frames | codes identical | RTF upstream / standalone | speedup | "
        "loaded MB | encode peak MB | process peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        for r in m["clips"]:
            same = "yes" if r["codes_identical"] else f"no ({r['codes_differing']}/{r['codes']} differ)"
            lines.append(
                f"| {m['model']} | {m['dtype']} | {m['parameters'] / 1e6:.1f}M | {r['audio_seconds']:.0f} | "
                f"{r['frames']} | {same} | {r['upstream_rtf']:.3f} / {r['standalone_rtf']:.3f} | "
                f"{r['upstream_rtf'] / r['standalone_rtf']:.2f}x | "
                f"{r['upstream_loaded_mb']:.0f} / {r['standalone_loaded_mb']:.0f} | "
                f"{r['upstream_encode_peak_mb']:.0f} / {r['standalone_encode_peak_mb']:.0f} | "
                f"{r['upstream_process_peak_mb']:.0f} / {r['standalone_process_peak_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        side, directory, dn, secs, repeats, threads, out = argv[1:8]
        print(json.dumps(child(side, directory, dn, float(secs), int(repeats), int(threads), out)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seconds", default="5,30", help="comma-separated clip lengths")
    args = ap.parse_args(argv)
    from q3tts.bench.generation import environment
    from q3tts.verify.fixtures.released import released_speech_tokenizer_config

    torch.set_num_threads(args.threads)
    seconds = [float(s) for s in args.seconds.split(",")]
    with tempfile.TemporaryDirectory(prefix="q3tts-bench-encode-") as tmp:
        models = bench(
            "released size",
            released_speech_tokenizer_config(),
            seconds,
            ("float32", "bfloat16"),
            args.repeats,
            args.threads,
            Path(tmp),
        )
    results = {"environment": environment(), "repeats": args.repeats, "models": models}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encode-benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (out / "encode-benchmark.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
