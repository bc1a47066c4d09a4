"""convert-ckpt: streaming, options, output layout, round trips, and every kind of bad input."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from q3tts.convert.cli import main as convert_cli
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.conversion import convert_checkpoint
from q3tts.verify.fixtures.writer import MODEL_TYPES, shard_checkpoint


def upstream_version_installed() -> str | None:
    """What the converter must record: the installed qwen-tts (none in the fast tier)."""
    try:
        return importlib.metadata.version("qwen-tts")
    except importlib.metadata.PackageNotFoundError:
        return None


def _all_tensors(directory):
    out = {}
    for p in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(p)))
    return out


def _codec_tensors(directory):
    return load_file(str(directory / "speech_tokenizer" / "model.safetensors"))


def run_cli(*args, env=None):
    r = CliRunner().invoke(convert_cli, [str(a) for a in args], env=env)
    return r.exit_code, r.output  # stdout and stderr, interleaved


@pytest.fixture
def upstream(checkpoints, tmp_path):
    dst = tmp_path / "up"
    shutil.copytree(checkpoints["base"][0], dst)
    return dst


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_round_trip_is_bit_identical(checkpoints, tmp_path, model_type, sharded):
    src = tmp_path / "src"
    shutil.copytree(checkpoints[model_type][0], src)
    if sharded:
        assert len(shard_checkpoint(src, 3)) == 3
    original = _all_tensors(src)
    convert_checkpoint(src, tmp_path / "st")
    convert_checkpoint(tmp_path / "st", tmp_path / "back", to="upstream")
    back = _all_tensors(tmp_path / "back")
    assert set(back) == set(original)
    for name, t in original.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    # The speech tokenizer too: converted to the standalone layout and back, bit for bit.
    codec_in, codec_st, codec_back = (_codec_tensors(d) for d in (src, tmp_path / "st", tmp_path / "back"))
    assert set(codec_back) == set(codec_in) and set(codec_st) != set(codec_in)
    for name, t in codec_in.items():
        assert codec_back[name].dtype == t.dtype and torch.equal(codec_back[name], t), name
    # The restored directory is upstream's: same config.json bytes, same side files.
    assert (tmp_path / "back" / "config.json").read_bytes() == (src / "config.json").read_bytes()
    for name in ("vocab.json", "merges.txt", "generation_config.json"):
        assert (tmp_path / "back" / name).read_bytes() == (src / name).read_bytes()


def test_sharded_output_loads_and_matches_single_file(checkpoints, tmp_path):
    up = checkpoints["custom_voice"][0]
    exit_code, out = run_cli(up, tmp_path / "sharded", "--shard-size", "100KB")
    assert exit_code == 0, out
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((tmp_path / "sharded" / f).is_file() for f in files)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in _all_tensors(tmp_path / "sharded").values()
    )
    a = Qwen3TTS.from_pretrained(tmp_path / "sharded")
    b = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1])
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)
    manifest = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
    assert set(files) <= set(manifest["files"])


@pytest.mark.parametrize(
    "dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)]
)
def test_dtype_option_casts_floating_tensors(checkpoints, tmp_path, dtype, torch_dtype):
    exit_code, out = run_cli(checkpoints["voice_design"][0], tmp_path / "o", "--dtype", dtype)
    assert exit_code == 0, out
    tensors = _all_tensors(tmp_path / "o")
    assert {t.dtype for t in tensors.values()} == {torch_dtype}
    src = _all_tensors(checkpoints["voice_design"][0])
    torch.testing.assert_close(
        tensors["talker.codec_head.weight"], src["talker.codec_head.weight"].to(torch_dtype), rtol=0, atol=0
    )


def test_dry_run_lists_every_source_tensor_and_writes_nothing(checkpoints, tmp_path):
    up = checkpoints["base"][0]
    exit_code, out = run_cli(up, tmp_path / "o", "--dry-run")
    assert exit_code == 0, out
    assert not (tmp_path / "o").exists()
    lines = [l for l in out.splitlines() if " -> " in l]
    n_sources = len(_all_tensors(up)) + len(_codec_tensors(up))
    listed = sum(l.split(" -> ")[0].count("[") for l in lines)
    assert listed == n_sources
    assert any(
        l.startswith("speech_tokenizer/ decoder.quantizer.rvq_first.vq.layers.0._codebook.embedding_sum") for l in lines
    )
    assert any(
        "self_attn.q_proj.weight [32, 32] F32, talker.model.layers.0.self_attn.k_proj.weight" in l
        and "-> talker.decoder.layers.0.attn.wqkv.weight [64, 32] F32 (concat)" in l
        for l in lines
    )
    assert "nothing written" in out


def test_output_layout_manifest_and_report(checkpoints, tmp_path):
    exit_code, out = run_cli(checkpoints["base"][0], tmp_path / "o")
    n_in = 137 + len(_codec_tensors(checkpoints["base"][0]))
    assert exit_code == 0 and f"converted {n_in} tensors" in out, out
    o = tmp_path / "o"
    names = {p.name for p in o.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "manifest.json",
        "conversion-report.json",
        "upstream_config.json",
        "generation_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "speech_tokenizer",
    } <= names
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]
    cfg = json.loads((o / "config.json").read_text())
    assert cfg["format"] == "q3tts-standalone" and cfg["format_version"] == 1
    report = json.loads((o / "conversion-report.json").read_text())
    n_codec_out = len(_codec_tensors(o))
    assert report["tensors_in"] == n_in and report["tensors_out"] == 121 + n_codec_out
    assert len(report["tensors"]) == 121 + n_codec_out
    manifest = json.loads((o / "manifest.json").read_text())
    assert manifest["converter_version"] and manifest["upstream_version"] == upstream_version_installed()
    assert "speech_tokenizer/model.safetensors" in manifest["files"]
    # Side files byte for byte.
    for rel in (
        "speech_tokenizer/config.json",
        "speech_tokenizer/preprocessor_config.json",
        "vocab.json",
        "generation_config.json",
    ):
        assert (o / rel).read_bytes() == (checkpoints["base"][0] / rel).read_bytes()


def test_progress_bar_reports_bytes(checkpoints, tmp_path):
    r = CliRunner().invoke(convert_cli, [str(checkpoints["base"][0]), str(tmp_path / "o"), "--progress"])
    assert r.exit_code == 0
    assert "converting" in r.output and "B" in r.output


def test_force_replaces_only_when_complete(checkpoints, tmp_path):
    dst = tmp_path / "o"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    exit_code, out = run_cli(checkpoints["base"][0], dst)
    assert exit_code == 1 and "already exists" in out
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    exit_code, out = run_cli(checkpoints["base"][0], dst, "--force")
    assert exit_code == 0 and not (dst / "keep.txt").exists()


# --- bad input: one line, non-zero exit, no traceback, nothing at DST -------------------------


def _truncate(up):
    p = up / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])


def _corrupt_header(up):
    p = up / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[8:20] = b"{not json!!!"
    p.write_bytes(bytes(data))


def _huge_header(up):
    p = up / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[:8] = struct.pack("<Q", 1 << 40)
    p.write_bytes(bytes(data))


def _edit(fn):
    def apply(up):
        sd = load_file(str(up / "model.safetensors"))
        fn(sd)
        save_file(sd, str(up / "model.safetensors"))

    return apply


def _config(fn):
    def apply(up):
        cfg = json.loads((up / "config.json").read_text())
        fn(cfg)
        (up / "config.json").write_text(json.dumps(cfg))

    return apply


def _only_pickle(up):
    (up / "model.safetensors").unlink()
    marker = up.parent / "UNPICKLED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (up / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))


def _index_disagrees(up):
    shard_checkpoint(up, 2)
    idx = json.loads((up / "model.safetensors.index.json").read_text())
    name = next(iter(idx["weight_map"]))
    idx["weight_map"][name] = (
        "model-00002-of-00002.safetensors"
        if idx["weight_map"][name].startswith("model-00001")
        else "model-00001-of-00002.safetensors"
    )
    (up / "model.safetensors.index.json").write_text(json.dumps(idx))


def _duplicate_across_shards(up):
    shard_checkpoint(up, 2)
    a = load_file(str(up / "model-00001-of-00002.safetensors"))
    b = load_file(str(up / "model-00002-of-00002.safetensors"))
    name = next(iter(a))
    b[name] = a[name]
    save_file(b, str(up / "model-00002-of-00002.safetensors"))


BAD_INPUTS = {
    "missing-config": (lambda up: (up / "config.json").unlink(), r"config.json: missing"),
    "malformed-config": (lambda up: (up / "config.json").write_text("{oops"), r"config.json: malformed JSON"),
    "unknown-model-type": (_config(lambda c: c.update(tts_model_type="karaoke")), r"unknown tts_model_type 'karaoke'"),
    "config-missing-field": (
        # A field upstream's config class has no default for (an absent hidden_size takes the
        # class default, 1024, as upstream's does, and then the weights' shapes disagree).
        _config(lambda c: c["talker_config"].pop("text_vocab_size")),
        r"missing required field 'text_vocab_size'",
    ),
    "config-contradicts-weights": (  # config_shapes.py: before any module is built
        _config(lambda c: c["talker_config"].__setitem__("num_hidden_layers", 1000)),
        r"talker_config\.num_hidden_layers = 1000, but the weights hold 2 of talker\.model\.layers\.N\.\*",
    ),
    "truncated-file": (_truncate, r"truncated"),
    "corrupt-header": (_corrupt_header, r"corrupt safetensors header"),
    "impossible-header-length": (_huge_header, r"corrupt safetensors header"),
    "wrong-shape": (
        _edit(lambda sd: sd.__setitem__("talker.model.norm.weight", torch.ones(7))),
        r"tensor talker.model.norm.weight has shape \[7\]",  # named by the config-shape check (config_shapes.py)
    ),
    "missing-tensor": (
        _edit(lambda sd: sd.pop("talker.code_predictor.lm_head.2.weight")),
        r"missing tensor\(s\) \['talker.code_predictor.lm_head.2.weight'\]",
    ),
    "extra-tensor": (
        _edit(lambda sd: sd.__setitem__("talker.surprise", torch.zeros(1))),
        r"unexpected tensor\(s\) \['talker.surprise'\]",
    ),
    "only-pickle": (_only_pickle, r"only pickle weights \(pytorch_model.bin\); refused"),
    "index-disagrees": (_index_disagrees, r"index puts .* but it is in"),
    "duplicate-tensor": (_duplicate_across_shards, r"duplicate tensor"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(upstream, tmp_path, case):
    corrupt, message = BAD_INPUTS[case]
    corrupt(upstream)
    dst = tmp_path / "out"
    exit_code, out = run_cli(upstream, dst)
    assert exit_code == 1, out
    assert "Traceback" not in out
    lines = [l for l in out.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("convert-ckpt: error:"), out
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert not (tmp_path / "UNPICKLED").exists()


def test_debug_shows_the_traceback(upstream, tmp_path):
    (upstream / "config.json").write_text("{oops")
    r = CliRunner().invoke(convert_cli, [str(upstream), str(tmp_path / "o"), "--debug"])
    assert r.exit_code != 0 and r.exception is not None


def test_standalone_source_is_refused(checkpoints, tmp_path):
    exit_code, out = run_cli(checkpoints["base"][1], tmp_path / "o")
    assert exit_code == 1 and "already a standalone checkpoint" in out
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["under-a-file", "read-only-fs"])
def test_unwritable_destination(checkpoints, tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "afile").write_text("x")
        dst = tmp_path / "afile" / "out"
    else:
        dst = "/proc/q3tts-cannot-write-here/out"
    exit_code, out = run_cli(checkpoints["base"][0], dst)
    assert exit_code == 1 and "cannot write there" in out and "Traceback" not in out, out


def test_hub_id_offline_fails_at_once(tmp_path):
    start = time.perf_counter()
    exit_code, out = run_cli("Qwen/Not-A-Real-Repo-xyz", tmp_path / "o", env={"HF_HUB_OFFLINE": "1"})
    assert exit_code == 1 and "HF_HUB_OFFLINE" in out, out
    assert time.perf_counter() - start < 10


def test_hub_id_unreachable_endpoint_fails_at_once(tmp_path):
    # A fresh interpreter, so huggingface_hub reads the endpoint from the environment.
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"))
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "q3tts.convert.cli", "Qwen/Not-A-Real-Repo-xyz", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    assert "cannot reach http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "o").exists()
