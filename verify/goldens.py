"""Golden outputs recorded from upstream qwen-tts on the tiny fixtures: the reference of the fast
test tier, which runs without qwen_tts and transformers.

    python -m q3tts.verify.goldens [--out tests/golden]     # reference environment: (re)write
    python -m q3tts.verify.goldens --check                   # exit 1 if the committed ones are stale

writes
- ``fixture_tensors.json``: the ordered tensor specs of the fixture checkpoints (see
  verify/fixtures.py), so the fast tier writes the same weights without upstream's modules;
- ``<model_type>.json``: what upstream computes on that fixture, with the versions that computed it.

The probes live in verify/golden_probes.py. Here: storing them, comparing a side's probes with the
stored ones (ids and codes equal; floats within verify/compare.py's fp32 tolerances), and recording
them from upstream, the one step that needs qwen_tts (imported only then).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .compare import TOLERANCES, compare
from .fixtures import MODEL_TYPES, SUITE_SEEDS, load_tensor_specs, record_tensor_specs, write_upstream_checkpoint
from .golden_probes import GENERATION_CASES, UpstreamSide, run_probes
from .machine import cpu_family

GOLDENS_FORMAT = "q3tts-goldens"
SPECS_FILE = "fixture_tensors.json"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
ATOL = TOLERANCES[torch.float32].atol
# Upstream's own codec decodes the fixtures' codes differently on another CPU family (oneDNN and
# ATen pick their convolution kernels by vendor and ISA). Measured between goldens recorded on an
# Intel Xeon (AVX-512, AMX) and upstream live on an AMD EPYC (AVX-512): max abs 3.28e-05 over
# every audio record (audio.long.frame310; the strided samples 2.85e-05), so an audio record
# compared on a CPU family it was not recorded on is held to 1e-04 (3x headroom), and to ATOL on
# its own family. The other records (ids, logits, x-vector, codes) hold ATOL on both families.
CROSS_CPU_AUDIO_ATOL = 1e-4
AUDIO_PREFIX = "audio."


def records_for_this_cpu(golden: dict[str, Any], family: str | None = None) -> tuple[dict[str, Any], bool]:
    """The records to compare with on this CPU family, and whether its audio records were recorded
    on this family (else they are compared at CROSS_CPU_AUDIO_ATOL)."""
    family = family or cpu_family()
    records = golden["records"]
    if golden.get("recorded_on") == family:
        return records, True
    own_audio = golden.get("audio_by_cpu", {}).get(family)
    if own_audio is not None:
        return {**records, **own_audio}, True
    return records, False


def golden_file(model_type: str) -> str:
    return f"{model_type}.json"


# --------------------------------------------------------------------------------------------
# Storage and comparison
# --------------------------------------------------------------------------------------------


def _floats(t: torch.Tensor) -> list[float]:
    # The shortest decimal that gives back the same float32: exact, and half the digits of float64.
    return [float(str(x)) for x in t.detach().to(torch.float32).flatten().numpy()]


def encode_value(value: Any) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        return dict(kind="floats", shape=list(value.shape), values=_floats(value))
    if isinstance(value, dict):  # audio summary
        return dict(
            kind="audio",
            n_samples=value["n_samples"],
            rms=value["rms"],
            peak=value["peak"],
            head=_floats(value["head"]),
            strided=_floats(value["strided"]),
        )
    if value and isinstance(value[0], list):
        return dict(kind="codes", items=value)
    return dict(kind="ids", ids=value)


@dataclass
class GoldenCheck:
    name: str
    passed: bool
    detail: str


def _first_code_difference(ref: list, got: list) -> str:
    if len(ref) != len(got):
        return f"{len(got)} items, golden has {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, got)):
        for f, (fa, fb) in enumerate(zip(a, b)):
            if fa != fb:
                g = next(k for k, (x, y) in enumerate(zip(fa, fb)) if x != y) if len(fa) == len(fb) else -1
                return f"item {i}: first difference at frame {f}, group {g}: golden {fa}, got {fb}"
        if len(a) != len(b):
            return f"item {i}: {len(b)} frames, golden has {len(a)}"
    return "identical"


def _close(name: str, ref: list[float], got: torch.Tensor, shape, atol: float | None = None) -> GoldenCheck:
    ref_t = torch.tensor(ref, dtype=torch.float32).reshape(shape)
    got = got.detach().float()
    if atol is None:
        c = compare(name, ref_t, got, torch.float32)
        return GoldenCheck(
            name, c.passed, f"max_abs {c.max_abs:.3e} (bound {c.bound:.1e}), cosine {c.cosine:.7f} {c.note}"
        )
    if tuple(got.shape) != tuple(ref_t.shape):
        return GoldenCheck(name, False, f"shape {tuple(got.shape)}, golden {tuple(ref_t.shape)}")
    err = float((ref_t - got).abs().max()) if got.numel() else 0.0
    return GoldenCheck(name, err <= atol, f"max_abs {err:.3e} (bound {atol:.1e})")


def check_record(name: str, golden: dict[str, Any], got: Any, own_cpu: bool = True) -> GoldenCheck:
    """``own_cpu``: the record was recorded on this CPU family; an audio record recorded on another
    is held to CROSS_CPU_AUDIO_ATOL."""
    kind = golden["kind"]
    cross = not own_cpu and name.startswith(AUDIO_PREFIX)
    if kind == "ids":
        return GoldenCheck(name, got == golden["ids"], f"golden {golden['ids']}, got {got}")
    if kind == "codes":
        diff = _first_code_difference(golden["items"], got)
        return GoldenCheck(name, diff == "identical", diff)
    if kind == "floats":
        return _close(name, golden["values"], got, golden["shape"], CROSS_CPU_AUDIO_ATOL if cross else None)
    if got["n_samples"] != golden["n_samples"]:
        return GoldenCheck(name, False, f"{got['n_samples']} samples, golden has {golden['n_samples']}")
    # The fp32 tolerance, not the looser cross-implementation audio one: one codec against
    # itself decodes bit-identically on one CPU family (verify/compare.py), and at 1e-4 a 1% change
    # in one late SnakeBeta goes unnoticed; across families only CROSS_CPU_AUDIO_ATOL holds.
    atol = CROSS_CPU_AUDIO_ATOL if cross else None
    checks = [
        _close(f"{name}.head", golden["head"], got["head"], [len(golden["head"])], atol),
        _close(f"{name}.strided", golden["strided"], got["strided"], [len(golden["strided"])], atol),
        _close(f"{name}.rms", [golden["rms"]], torch.tensor([got["rms"]]), [1], atol or ATOL),
        _close(f"{name}.peak", [golden["peak"]], torch.tensor([got["peak"]]), [1], atol or ATOL),
    ]
    return GoldenCheck(name, all(c.passed for c in checks), "; ".join(f"{c.name}: {c.detail}" for c in checks))


def check_probes(golden: dict[str, Any], got: dict[str, Any]) -> list[GoldenCheck]:
    """One check per golden record (this CPU family's audio records where recorded), plus one for
    probes the golden lacks (or has extra)."""
    records, own_cpu = records_for_this_cpu(golden)
    checks = [check_record(n, records[n], got[n], own_cpu) for n in records if n in got]
    missing, extra = sorted(set(records) - set(got)), sorted(set(got) - set(records))
    if missing or extra:
        checks.append(GoldenCheck("probe set", False, f"not computed: {missing}; not in the golden: {extra}"))
    return checks


def weights_digest(directory: str | Path) -> str:
    """sha256 over the tensors (name, dtype, shape, bytes) of a safetensors file: independent of
    the writer's header layout, so it compares fixtures across safetensors versions."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(directory)).items()):
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fixture_digests(checkpoint_dir: str | Path) -> dict[str, str]:
    d = Path(checkpoint_dir)
    return {rel: weights_digest(d / rel) for rel in ("model.safetensors", "speech_tokenizer/model.safetensors")}


def load_goldens(directory: str | Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
    directory = Path(directory)
    out = {}
    for mt in MODEL_TYPES:
        golden = json.loads((directory / golden_file(mt)).read_text(encoding="utf-8"))
        if golden.get("format") != GOLDENS_FORMAT:
            raise ValueError(f"{directory / golden_file(mt)}: not a goldens file")
        out[mt] = golden
    return out


# --------------------------------------------------------------------------------------------
# Recording (reference environment)
# --------------------------------------------------------------------------------------------


def reference_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("qwen-tts", "transformers", "torch", "numpy", "tokenizers", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def record_goldens(work_dir: str | Path) -> dict[str, Any]:
    """{file name: content} of every golden file, computed by upstream on fixtures written with
    upstream's own modules (needs qwen_tts)."""
    from .forward_parity import load_upstream_wrapper

    versions = reference_versions()
    files: dict[str, Any] = {SPECS_FILE: dict(record_tensor_specs(), recorded_with=versions)}
    for mt in MODEL_TYPES:
        ckpt = write_upstream_checkpoint(Path(work_dir) / mt, mt, seed=SUITE_SEEDS[mt])
        probes = run_probes(UpstreamSide(load_upstream_wrapper(ckpt, torch.float32)), mt)
        for case in GENERATION_CASES:
            value = probes.get(f"generate.{case.name}")
            if value is not None and min(len(item) for item in value) < case.min_frames:
                raise RuntimeError(
                    f"{case.name}: upstream stopped before {case.min_frames} frames; pick another case or seed"
                )
        files[golden_file(mt)] = dict(
            format=GOLDENS_FORMAT,
            format_version=1,
            recorded_with=versions,
            recorded_on=cpu_family(),
            fixture=dict(model_type=mt, seed=SUITE_SEEDS[mt], dtype="float32", weights_sha256=fixture_digests(ckpt)),
            records={name: encode_value(value) for name, value in probes.items()},
        )
    return files


def dumps(obj: Any, depth: int) -> str:
    """JSON laid out one item per line down to ``depth`` levels and compact below: one record (or
    one tensor of a spec) per line, so that a changed golden is a small diff."""

    def render(value: Any, level: int) -> str:
        if level >= depth or not isinstance(value, (dict, list)) or not value:
            return json.dumps(value, ensure_ascii=False)
        pad = " " * (level + 1)
        if isinstance(value, dict):
            items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {render(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
        return "[\n" + ",\n".join(pad + render(v, level + 1) for v in value) + "\n" + " " * level + "]"

    return render(obj, 0) + "\n"


def stale_records(committed_dir: str | Path, fresh: dict[str, Any]) -> list[str]:
    """What differs between the committed goldens and freshly recorded ones (empty: current)."""
    committed_dir = Path(committed_dir)
    problems = []
    specs = load_tensor_specs(committed_dir / SPECS_FILE)
    if specs["parts"] != fresh[SPECS_FILE]["parts"]:
        problems.append(f"{SPECS_FILE}: the tensor specs differ from upstream's modules")
    committed = load_goldens(committed_dir)
    for mt in MODEL_TYPES:
        new = fresh[golden_file(mt)]
        if committed[mt]["fixture"] != new["fixture"]:
            problems.append(f"{golden_file(mt)}: fixture {committed[mt]['fixture']} != {new['fixture']}")
        got = {n: decode_value(r) for n, r in new["records"].items()}
        problems += [
            f"{golden_file(mt)}: {c.name}: {c.detail}" for c in check_probes(committed[mt], got) if not c.passed
        ]
    return problems


def with_this_cpus_audio(committed: dict[str, dict[str, Any]], fresh: dict[str, Any]) -> dict[str, Any]:
    """The committed golden files with the fresh audio records stored under this CPU family."""
    out = {SPECS_FILE: fresh[SPECS_FILE]}
    for mt in MODEL_TYPES:
        golden = dict(committed[mt])
        new = fresh[golden_file(mt)]
        if golden.get("recorded_on") != new["recorded_on"]:
            audio = {n: r for n, r in new["records"].items() if n.startswith(AUDIO_PREFIX)}
            golden["audio_by_cpu"] = {**golden.get("audio_by_cpu", {}), new["recorded_on"]: audio}
        out[golden_file(mt)] = golden
    return out


def decode_value(record: dict[str, Any]) -> Any:
    """The in-memory form of a stored record (as the probes return it)."""
    kind = record["kind"]
    if kind == "floats":
        return torch.tensor(record["values"], dtype=torch.float32).reshape(record["shape"])
    if kind == "audio":
        return dict(record, head=torch.tensor(record["head"]), strided=torch.tensor(record["strided"]))
    return record["items"] if kind == "codes" else record["ids"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m q3tts.verify.goldens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"golden directory (default: {DEFAULT_DIR})")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    parser.add_argument(
        "--add-cpu",
        action="store_true",
        help="keep the golden records in --out and add this CPU family's audio records to them (the rest must be "
        "current); the fixture specs and files are rewritten",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the test suite runs
    with tempfile.TemporaryDirectory() as tmp:
        files = record_goldens(tmp)
    if args.check:
        problems = stale_records(args.out, files)
        for p in problems:
            print(f"stale: {p}", file=sys.stderr)
        print("goldens are current" if not problems else f"{len(problems)} stale golden(s); rerun without --check")
        return 1 if problems else 0
    if args.add_cpu:
        # The spec file is rewritten from upstream's classes whatever the CPU; a change in it that
        # changes the fixtures shows as a changed fixture digest below.
        problems = [
            p for p in stale_records(args.out, files) if f": {AUDIO_PREFIX}" not in p and not p.startswith(SPECS_FILE)
        ]
        if problems:
            print("\n".join(f"stale: {p}" for p in problems), file=sys.stderr)
            print("the goldens are stale beyond audio; regenerate them without --add-cpu", file=sys.stderr)
            return 1
        files = with_this_cpus_audio(load_goldens(args.out), files)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        # Specs: one tensor per line (parts > part > tensors > tensor); goldens: one record per line.
        (args.out / name).write_text(dumps(content, 4 if name == SPECS_FILE else 2), encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
