"""The standalone model against outputs recorded from upstream qwen-tts (tests/golden/): parity
without the reference stack. Regenerate with `python -m q3tts.verify.fixtures.goldens` (reference
environment); the reference tier checks that the committed goldens are current."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import torch

from q3tts.verify.fixtures.goldens import (
    ATOL,
    CROSS_CPU_AUDIO_ATOL,
    SPECS_FILE,
    check_probes,
    check_record,
    cpu_family,
    fixture_digests,
    load_goldens,
    record_goldens,
    records_for_this_cpu,
    stale_records,
)
from q3tts.verify.fixtures.probes import (
    GENERATION_CASES,
    MIN_FRAMES,
    StandaloneSide,
    run_generation_case,
    run_probes,
)
from q3tts.verify.fixtures.writer import (
    MODEL_TYPES,
    SUITE_SEEDS,
    TensorSpecError,
    record_tensor_specs,
    write_upstream_checkpoint,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDENS = load_goldens(GOLDEN_DIR)
RECORDS = [(mt, name) for mt in MODEL_TYPES for name in GOLDENS[mt]["records"]]

_probes: dict = {}


@pytest.fixture(scope="module")
def standalone_probes(load_standalone):
    def get(model_type: str) -> dict:
        if model_type not in _probes:
            _probes[model_type] = run_probes(StandaloneSide(load_standalone(model_type)), model_type)
        return _probes[model_type]

    return get


# --- the fast tier -------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fixture_weights_are_those_the_goldens_were_recorded_on(checkpoints, model_type):
    """Written from the recorded tensor specs, on this machine's torch: the same tensors, byte
    for byte, as the fixture upstream computed the goldens on."""
    fixture = GOLDENS[model_type]["fixture"]
    assert fixture["seed"] == SUITE_SEEDS[model_type]
    assert fixture_digests(checkpoints[model_type][0]) == fixture["weights_sha256"], (
        "the fixture's weights differ from the goldens' (did torch's RNG or the fixture initialiser change?)"
    )


@pytest.mark.parametrize("model_type, record", RECORDS, ids=[f"{mt}:{n}" for mt, n in RECORDS])
def test_standalone_equals_upstream_golden(standalone_probes, model_type, record):
    records, own_cpu = records_for_this_cpu(GOLDENS[model_type])
    check = check_record(record, records[record], standalone_probes(model_type)[record], own_cpu)
    assert check.passed, f"{model_type} {record}: {check.detail}"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_probe_has_a_golden(standalone_probes, model_type):
    """A probe added without regenerating (or a golden left over) is a failure, not a silent gap."""
    assert set(standalone_probes(model_type)) == set(GOLDENS[model_type]["records"])


def test_goldens_say_what_produced_them():
    for golden in GOLDENS.values():
        versions = golden["recorded_with"]
        assert versions["qwen-tts"] and versions["transformers"] and versions["torch"], versions
        assert golden["recorded_on"] == "GenuineIntel-AVX512"  # the CPU family of the main records
        # and the audio of every other family measured (tests/golden: `--add-cpu` on each)
        assert set(golden.get("audio_by_cpu", {})) >= {"AuthenticAMD-AVX512"}


def test_audio_goldens_follow_the_cpu_family():
    """This family's audio records where they were recorded; another family's audio at the measured
    cross-family bound, and only audio: ids, logits, x-vectors and codes hold ATOL everywhere."""
    golden = GOLDENS["base"]
    own, strict = records_for_this_cpu(golden, "AuthenticAMD-AVX512")
    assert strict and own["audio.clip.0"] == golden["audio_by_cpu"]["AuthenticAMD-AVX512"]["audio.clip.0"]
    assert own["speaker_encoder.embedding"] is golden["records"]["speaker_encoder.embedding"]
    other, strict = records_for_this_cpu(golden, "SomeVendor-AVX2")
    assert not strict and other is golden["records"]
    record = golden["records"]["audio.long.frame310"]
    values = torch.tensor(record["values"]).reshape(record["shape"])
    for shift, passes_own, passes_other in [
        (0.5 * ATOL, True, True),
        (3 * ATOL, False, True),
        (2 * CROSS_CPU_AUDIO_ATOL, False, False),
    ]:
        got = values + shift
        assert check_record("audio.long.frame310", record, got, own_cpu=True).passed is passes_own
        assert check_record("audio.long.frame310", record, got, own_cpu=False).passed is passes_other
    emb = golden["records"]["speaker_encoder.embedding"]
    moved = torch.tensor(emb["values"]).reshape(emb["shape"]) + 3 * ATOL
    assert not check_record("speaker_encoder.embedding", emb, moved, own_cpu=False).passed


def test_goldens_cover_what_they_claim():
    kinds = {mt: {r["kind"] for r in g["records"].values()} for mt, g in GOLDENS.items()}
    assert all(k == {"ids", "floats", "codes", "audio"} for k in kinds.values()), kinds
    assert all("audio.long.frame_rms" in g["records"] for g in GOLDENS.values())  # past the decode chunk
    assert "speaker_encoder.embedding" in GOLDENS["base"]["records"]
    min_frames = {f"generate.{c.name}": c.min_frames for c in GENERATION_CASES}
    for mt, golden in GOLDENS.items():
        codes = {n: r["items"] for n, r in golden["records"].items() if r["kind"] == "codes"}
        assert any(len(items) > 1 for items in codes.values()), f"{mt}: no batch case"
        assert all(len(item) >= min_frames[n] for n, items in codes.items() for item in items), codes
        assert sum(len(item) >= MIN_FRAMES for items in codes.values() for item in items) >= 5, codes
        # A left-padded batch: items of different prompt lengths.
        assert any(len({len(i) for i in items}) > 1 for items in codes.values()), f"{mt}: batch items all alike"


@torch.inference_mode()  # the codec's weights are inference tensors (loaded on first decode)
def test_every_weight_matters_to_the_forward_and_audio_goldens(load_standalone):
    """Noise of 1% of a tensor's RMS, in any single tensor of the base model or its codec, fails
    a golden: the goldens are as sharp as the reference tier's forward parity."""
    records, own_cpu = records_for_this_cpu(GOLDENS["base"])
    if not own_cpu:
        pytest.skip(
            f"no audio goldens recorded on this CPU family ({cpu_family()}), and at the cross-family bound a 1% "
            "change of a late SnakeBeta goes unseen: add them with `python -m q3tts.verify.fixtures.goldens --add-cpu`"
        )
    model = load_standalone("base")
    side = StandaloneSide(model)

    def fails(group: str) -> bool:
        got = run_probes(side, "base", (group,))
        sub = {"records": {n: records[n] for n in got}, "recorded_on": cpu_family()}
        return not all(c.passed for c in check_probes(sub, got))

    # Provably without effect: asp.conv.bias shifts a softmax over time by a per-channel constant;
    # the quantizer's input projections belong to the encoder, unused when decoding.
    inert = {"speaker_encoder.asp.conv.bias", "codec.semantic_input_proj", "codec.acoustic_input_proj"}
    targets = [(n, p, "forward") for n, p in model.named_parameters()]
    targets += [(f"codec.{n}", p, "audio") for n, p in model.codec.named_parameters()]
    g = torch.Generator().manual_seed(0)
    undetected = []
    for name, p, group in targets:
        if name in inert:
            continue
        original = p.detach().clone()
        p.add_(1e-2 * original.float().pow(2).mean().sqrt() * torch.randn(p.shape, generator=g))
        try:
            if not fails(group):
                undetected.append(name)
        finally:
            p.copy_(original)
    assert len(targets) > 250 and not undetected, f"perturbations no golden noticed: {undetected}"
    assert not fails("forward") and not fails("audio")  # restored exactly


SAMPLING_CHANGES = {
    "talker/sub-talker parameters swapped": dict(
        top_k=4, top_p=0.95, temperature=0.6, subtalker_top_k=8, subtalker_top_p=0.85, subtalker_temperature=1.3
    ),
    "talker top_k 8 -> 7": dict(top_k=7),
    "sub-talker top_k 4 -> 2": dict(subtalker_top_k=2),
    "talker top_p 0.85 -> 0.8": dict(top_p=0.8),
    "sub-talker top_p 0.95 -> 0.8": dict(subtalker_top_p=0.8),
    "talker temperature 1.3 -> 0.7": dict(temperature=0.7),
    "sub-talker temperature 0.6 -> 1.0": dict(subtalker_temperature=1.0),
    "repetition penalty 1.3 -> 1.0": dict(repetition_penalty=1.0),
    "sub-talker greedy": dict(subtalker_dosample=False),
}


@pytest.mark.parametrize("change", list(SAMPLING_CHANGES))
def test_a_changed_sampling_detail_fails_the_sampled_golden(load_standalone, change):
    case = next(c for c in GENERATION_CASES if c.name == "custom_voice.sampled")
    golden = GOLDENS["custom_voice"]["records"][f"generate.{case.name}"]
    side = StandaloneSide(load_standalone("custom_voice"))
    assert check_record(case.name, golden, run_generation_case(side, case)).passed
    changed = run_generation_case(side, case, **SAMPLING_CHANGES[change])
    assert not check_record(case.name, golden, changed).passed, f"{change}: same codes as the golden"


def test_specs_for_another_config_are_refused(tensor_specs, tmp_path):
    stale = json.loads(json.dumps(tensor_specs))
    stale["parts"]["talker.base"]["config_sha256"] = "0" * 64
    with pytest.raises(TensorSpecError, match="made for another config; regenerate"):
        write_upstream_checkpoint(tmp_path / "x", "base", tensor_specs=stale)
    stale = json.loads(json.dumps(tensor_specs))
    stale["parts"]["speech_tokenizer"]["tensors"][0][2] = "int64"
    with pytest.raises(TensorSpecError, match="is int64"):
        write_upstream_checkpoint(tmp_path / "y", "base", tensor_specs=stale)


# --- the reference tier: the goldens and specs are upstream's, and current ------------------


@pytest.mark.reference
def test_recorded_tensor_specs_equal_upstreams_modules(tensor_specs):
    assert tensor_specs["parts"] == record_tensor_specs()["parts"]


@pytest.mark.reference
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_spec_writer_writes_the_bytes_upstreams_classes_write(tensor_specs, tmp_path, model_type):
    """The fast tier's fixtures are upstream's: the same files, each JSON file key for key and value
    for value, every file byte for byte."""
    seed = SUITE_SEEDS[model_type]
    a = write_upstream_checkpoint(tmp_path / "modules", model_type, seed=seed)
    b = write_upstream_checkpoint(tmp_path / "specs", model_type, seed=seed, tensor_specs=tensor_specs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in (r for r in files if r.suffix == ".json"):
        assert json.loads((b / rel).read_text()) == json.loads((a / rel).read_text()), rel
    for rel in files:
        assert hashlib.sha256((a / rel).read_bytes()).digest() == hashlib.sha256((b / rel).read_bytes()).digest(), rel


@pytest.mark.reference
def test_committed_goldens_are_current():
    with tempfile.TemporaryDirectory() as tmp:
        fresh = record_goldens(tmp)
    assert set(fresh) == {SPECS_FILE, *(f"{mt}.json" for mt in MODEL_TYPES)}
    problems = stale_records(GOLDEN_DIR, fresh)
    assert not problems, "stale goldens; regenerate with `python -m q3tts.verify.fixtures.goldens`:\n" + "\n".join(
        problems
    )
