"""The work-memory estimates (standalone/work_memory.py) against the real peak resident memory,
and the sha256 rate behind from_pretrained(verify="sha256")'s stated cost.

Each measurement runs in a fresh process on the tiny base fixture: the model is loaded and the
work run once on a small input (so lazy loads and library initialisation are not counted), the
input is made, the kernel's peak-RSS mark is reset (/proc/self/clear_refs 5), then the work runs
and the peak above the RSS just before it is compared with the estimate.

    python -m q3tts.bench.work_memory [--released] [--out reports/work-memory.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {
    "resample": (60, 240, 600),  # seconds at 44.1 kHz -> 24 kHz
    "encode": (20, 80, 160),  # seconds at 24 kHz
    "speaker": (20, 80, 160),  # seconds at 24 kHz
    "decode": (2000, 8000, 20000),  # frames
}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _work(model, op: str, size: int):
    """(input made now, the work as a callable, its estimate in bytes)."""
    import numpy as np
    import torch

    from q3tts.standalone.audio import resample
    from q3tts.standalone.work_memory import decode_bytes, encode_bytes, resample_bytes, speaker_bytes

    rng = np.random.default_rng(0)
    if op == "decode":
        codes = torch.as_tensor(rng.integers(0, 16, (size, model.config.talker.num_code_groups)))
        return lambda: model.decode_codes(codes), decode_bytes(model.codec.cfg, 1, size)
    rate = 44100 if op == "resample" else 24000
    wav = (0.1 * rng.standard_normal(size * rate)).astype(np.float32)
    if op == "resample":
        return lambda: resample(wav, rate, 24000), resample_bytes(wav.size, rate, 24000)
    if op == "encode":
        return lambda: model.encode_audio((wav, rate)), encode_bytes(model.speech_encoder.cfg, 1, wav.size)
    return lambda: model.extract_speaker_embedding(wav, rate), speaker_bytes(model.config.speaker_encoder, wav.size)


class ReleasedCodec:
    """The released speech tokenizer's decoder (its published config) with random weights, where
    one 300-frame chunk's activations, not the samples, dominate a decode's memory."""

    def __init__(self):
        import torch

        from q3tts.standalone.codec import CodecConfig, CodecDecoder
        from q3tts.verify.fixtures.released import released_speech_tokenizer_config

        self.cfg = CodecConfig.from_upstream(released_speech_tokenizer_config())
        self.decoder = CodecDecoder(self.cfg).eval()
        with torch.no_grad():
            for p in self.decoder.parameters():
                p.normal_(0, 0.02)

    def work(self, size: int):
        import torch

        from q3tts.standalone.work_memory import decode_bytes

        codes = [torch.randint(0, self.cfg.codebook_size, (size, self.cfg.num_quantizers))]
        return lambda: self.decoder.decode(codes), decode_bytes(self.cfg, 1, size)


def child(checkpoint: str, op: str, size: int) -> None:
    import gc

    import torch

    from q3tts.standalone import Qwen3TTS

    torch.set_num_threads(1)
    if op == "decode-released":
        codec = ReleasedCodec()
        codec.work(3)[0]()  # warm
        work, estimate = codec.work(size)
    else:
        model = Qwen3TTS.from_pretrained(checkpoint)
        _work(model, op, 2)[0]()  # warm: lazy loads, library initialisation
        work, estimate = _work(model, op, size)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    base = _status("VmRSS")
    work()
    peak = _status("VmHWM") - base
    print(json.dumps(dict(op=op, size=size, estimate=estimate, peak=peak, ratio=estimate / peak)))


def fixture() -> Path:
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.fixtures.writer import SUITE_SEEDS, load_tensor_specs, write_upstream_checkpoint

    root = Path(tempfile.mkdtemp(prefix="q3tts-work-memory-"))
    specs = load_tensor_specs(Path(__file__).resolve().parents[1] / "tests" / "golden" / "fixture_tensors.json")
    up = write_upstream_checkpoint(root / "up", "base", seed=SUITE_SEEDS["base"], tensor_specs=specs)
    convert_checkpoint(up, root / "st")
    return root / "st"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--released", action="store_true", help="also decode 300 frames with the released codec (about 2 minutes)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]))
    checkpoint, rows = fixture(), []
    for op, sizes in {**SIZES, **({"decode-released": (300,)} if args.released else {})}.items():
        for size in sizes:
            cmd = [sys.executable, "-m", "q3tts.bench.work_memory", "--child", str(checkpoint), op, str(size)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
            r = rows[-1]
            print(
                f"{op:9s} {size:6d}: estimate {r['estimate'] / 2**20:9.1f} MiB, peak {r['peak'] / 2**20:9.1f} MiB, ratio {r['ratio']:.2f}"
            )
    hashing = hash_rates()
    print("sha256 of a 100 MiB file: " + ", ".join(f"{k} {v:.0f} MB/s" for k, v in hashing.items()))
    if args.out:
        report = dict(machine=machine(), threads=1, rows=rows, sha256_mb_per_s=hashing)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def hash_rates(mib: int = 100, runs: int = 3) -> dict[str, float]:
    """from_pretrained(verify="sha256")'s cost: manifest.sha256_file over a ``mib`` MiB file, the
    best of ``runs``, from the page cache ("cached") and after evicting the file's pages
    (posix_fadvise DONTNEED: "evicted", read from the disk again)."""
    import os
    import time

    from q3tts.standalone.manifest import sha256_file

    rates = {}
    with tempfile.TemporaryDirectory(prefix="q3tts-hash-") as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(os.urandom(mib << 20))
        for kind in ("cached", "evicted"):
            best = float("inf")
            for _ in range(runs):
                if kind == "evicted":
                    fd = os.open(path, os.O_RDONLY)
                    os.fdatasync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
                t0 = time.perf_counter()
                sha256_file(path)
                best = min(best, time.perf_counter() - t0)
            rates[kind] = (mib << 20) / 1e6 / best
    return rates


def machine() -> str:
    """The CPU model (lscpu's model name) and the physical memory."""
    import os

    name = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{name}, {os.cpu_count()} cores, {ram:.0f} GiB"


if __name__ == "__main__":
    main()
