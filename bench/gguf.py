"""Fidelity and speed of qwentts.cpp per GGUF quantisation at the released sizes (random weights).

Two phases, so the timed one holds the machine only for what it measures:

    /work/cpu test  python -m q3tts.bench.gguf prepare --size 0.6B --root /tmp/gguf-bench
    /work/cpu bench python -m q3tts.bench.gguf measure --size 0.6B --root /tmp/gguf-bench \
        --out /tmp/gguf-bench/fidelity-0.6B.jsonl
    python -m q3tts.bench.gguf table --jsonl /tmp/gguf-bench/fidelity-*.jsonl

``prepare`` writes the upstream checkpoint (released config, fixture initialiser, released-id
tokenizer), its standalone conversion and one GGUF pair per quantisation. ``measure`` runs the
standalone model (fp32, the exact path, bit-identical to upstream) once, frees its talker, then
runs qwentts.cpp on each GGUF pair in turn (one engine in memory at a time: the 1.7B F32 talker
alone is ~7 GB), and appends one JSON line per quantisation: prompt ids, greedy code agreement,
frame-0 group-0 argmax, audio from identical codes, and ms/frame on both sides.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

QUANTS = ("F32", "F16", "BF16", "Q8_0")
TEXT = "Hello world, this is a test of the converter."
SPEAKER = "serena"


def prepare(size: str, root: Path, quants, model_type: str = "custom_voice", seed: int = 0) -> None:
    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.gguf_conversion import convert_to_gguf
    from q3tts.verify.engines.gguf import write_released_id_tokenizer
    from q3tts.verify.fixtures.writer import write_release_size_checkpoint

    up, st = root / f"upstream-{size}", root / f"standalone-{size}"
    if not (up / "config.json").is_file():
        write_release_size_checkpoint(up, size, model_type, seed=seed)
        write_released_id_tokenizer(up)
    if not (st / "manifest.json").is_file():
        convert_checkpoint(up, st)
    for q in quants:
        out = root / f"gguf-{size}-{q}"
        if not (out / "manifest.json").is_file():
            convert_to_gguf(up, out, quant=q, force=True)
        print(f"{size} {q}: {out}", flush=True)


def _reference(st_dir: Path, frames: int, threads: int):
    """Standalone fp32 greedy run and its decode: (result, codec, model_type, seconds)."""
    from q3tts.standalone.model import Qwen3TTS
    from q3tts.verify.engines.gguf import run_standalone, standalone_prefill

    model = Qwen3TTS.from_pretrained(st_dir, dtype=torch.float32)
    ref = run_standalone(model, text=TEXT, speaker=SPEAKER, max_new_tokens=frames)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.decode_codes(torch.as_tensor(ref["codes"]))
    ref["decode_s"] = time.perf_counter() - t0
    ref["prefill_logits"] = standalone_prefill(model, text=TEXT, speaker=SPEAKER)["talker-logits-prefill"]
    codec, model_type = model.codec, model.config.tts_model_type
    codebook = model.config.talker.code_predictor.vocab_size
    del model
    gc.collect()
    return ref, codec, model_type, codebook


def measure(size: str, root: Path, quants, frames: int, threads: int, out: Path) -> None:
    from q3tts.verify.engines.gguf import audio_metrics, code_agreement, first_difference, prefill_argmax, run_qwentts

    torch.set_num_threads(threads)
    ref, codec, model_type, codebook = _reference(root / f"standalone-{size}", frames, threads)
    n_ref = len(ref["codes"])
    st_ms = 1000 * (ref["synth_s"] + ref["decode_s"]) / max(n_ref, 1)
    print(f"{size} standalone fp32: {n_ref} frames, {st_ms:.0f} ms/frame (generate + decode)", flush=True)
    for q in quants:
        eng = run_qwentts(root / f"gguf-{size}-{q}", text=TEXT, speaker=SPEAKER, max_new_tokens=frames, threads=threads)
        n_eng = len(eng["codes"])
        # the timed run has no debug dumps (they add per-step readbacks); greedy, so the same frames
        log: list[str] = []
        timed = run_qwentts(
            root / f"gguf-{size}-{q}",
            text=TEXT,
            speaker=SPEAKER,
            max_new_tokens=frames,
            threads=threads,
            dump=False,
            log=log,
        )
        with torch.inference_mode():
            wav = codec.decode([torch.as_tensor(eng["codes"])])[0] if n_eng else np.zeros(0, np.float32)
        row = {
            "size": size,
            "model_type": model_type,
            "quant": q,
            "threads": threads,
            "gguf_talker_bytes": sum(p.stat().st_size for p in (root / f"gguf-{size}-{q}").glob("qwen-talker-*.gguf")),
            "prompt_ids_identical": first_difference(ref["prompt_ids"], eng["prompt_ids"]) is None,
            "prompt_len": len(ref["prompt_ids"]),
            "codes": code_agreement(ref["codes"], eng["codes"], frames),
            "frame0_group0": prefill_argmax(ref["prefill_logits"], eng.get("prefill_logits"), codebook),
            "audio_from_engine_codes": audio_metrics(np.asarray(wav, np.float32), eng["audio"]),
            "engine_ms_per_frame": 1000 * timed["synth_s"] / max(n_eng, 1),
            "engine_ms_per_frame_with_dumps": 1000 * eng["synth_s"] / max(n_eng, 1),
            "engine_samples_timed_run": int(len(timed["audio"])),
            "engine_perf": [m.strip() for m in log if "[Perf]" in m],
            "engine_load_s": timed["load_s"],
            "standalone_ms_per_frame": st_ms,
            "standalone_decode_ms_per_frame": 1000 * ref["decode_s"] / max(n_ref, 1),
            "standalone_frames": n_ref,
            "load_average": os.getloadavg(),
        }
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        c = row["codes"]
        print(
            f"{size} {q}: {c['identical_frames']}/{c['compared_frames']} frames, first {c['first_divergence']}, "
            f"SNR {row['audio_from_engine_codes'].get('snr_db')}, {row['engine_ms_per_frame']:.0f} ms/frame",
            flush=True,
        )
        del eng, wav, timed
        gc.collect()


def _perf(row: dict, key: str, field: int) -> float | None:
    """A number from the engine's own [Perf] line that starts with ``key``."""
    line = next((m for m in row.get("engine_perf", []) if m.startswith(f"[Perf] {key}")), None)
    return None if line is None else float(line.replace("(", "").split()[field])


def render_table(rows: list[dict]) -> str:
    """The fidelity + speed table of reports/gguf-fidelity.md from measure's JSON lines."""
    out = [
        "| size | quant | talker GGUF | prompt ids | identical frames | first divergence | frame-0 group-0 argmax | "
        "audio SNR (identical codes) | log-mel L1 | engine ms/frame: end to end / AR / codec | "
        "standalone exact ms/frame: end to end / codec |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, a, tf = r["codes"], r["audio_from_engine_codes"], r["frame0_group0"]
        fd = c["first_divergence"]
        where = "none" if fd is None else f"frame {fd['frame']}, group {fd['group']}"
        frames = max(c["frames_engine"], 1)
        decode, ar = _perf(r, "CodecDecode", 2), _perf(r, "Total", 6)
        engine = f"{r['engine_ms_per_frame']:.0f} / {_fmt(ar)} / {_fmt(None if decode is None else decode / frames)}"
        out.append(
            f"| {r['size']} | {r['quant']} | {r['gguf_talker_bytes'] / 1e9:.2f} GB | "
            f"{'identical' if r['prompt_ids_identical'] else 'DIFFER'} ({r['prompt_len']}) | "
            f"{c['identical_frames']} of {c['compared_frames']} | {where} | "
            f"{'same' if tf.get('same_argmax') else 'differs'} | {a['snr_db']:.1f} dB | {a.get('log_mel_l1', 0):.3f} | "
            f"{engine} | {r['standalone_ms_per_frame']:.0f} / {r['standalone_decode_ms_per_frame']:.0f} |"
        )
    return "\n".join(out) + "\n"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.0f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("phase", choices=("prepare", "measure", "table"))
    p.add_argument("--jsonl", type=Path, nargs="*", default=[], help="table: measure outputs to render")
    p.add_argument("--size", choices=("0.6B", "1.7B"), default="0.6B")
    p.add_argument("--root", type=Path)
    p.add_argument("--quants", default=",".join(QUANTS))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    quants = [q.strip().upper() for q in a.quants.split(",") if q.strip()]
    bad = sorted(set(quants) - set(QUANTS))
    if bad:
        p.error(f"--quants: unknown {bad}; choose from {', '.join(QUANTS)}")
    if a.phase == "table":
        rows = [json.loads(line) for f in a.jsonl for line in f.read_text().splitlines() if line.strip()]
        print(render_table(rows), end="")
        return
    if a.root is None:
        p.error(f"{a.phase} needs --root")
    a.root.mkdir(parents=True, exist_ok=True)
    if a.phase == "prepare":
        prepare(a.size, a.root, quants)
    else:
        if a.out is None:
            p.error("measure needs --out")
        measure(a.size, a.root, quants, a.frames, a.threads, a.out)


if __name__ == "__main__":
    main()
