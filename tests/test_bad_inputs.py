"""Every row of the bad-input catalogue behaves as decided: the runtime API (tests/bad_inputs.py),
its works rows against upstream where upstream accepts the input (reference tier), and the CLI
(tests/bad_inputs_cli.py); docs/bad-inputs.md is rendered from the current catalogue."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from bad_inputs import FUZZ_EXAMPLES_PER_RUN, NO_UPSTREAM, ROWS, SAME, Refuses, render_markdown  # tests/ on sys.path
from bad_inputs_cli import CLI_ROWS
from click.testing import CliRunner

from q3tts.standalone.cli import main
from q3tts.verify.cases.forward import speech_like_waveform


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.entry}:{r.case}" for r in ROWS])
def test_catalogue_row(load_standalone, row):
    m = load_standalone(row.model_type)
    if row.raises is None:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.call(m)
        return
    with pytest.raises(row.raises) as info:
        row.call(m)
    assert type(info.value) is row.raises or row.raises is ValueError, type(info.value)
    assert re.search(row.match, str(info.value)), f"{type(info.value).__name__}: {info.value}"
    assert "\n" not in str(info.value), "one line, so a CLI can print it as is"


# --- works rows against upstream ------------------------------------------------------------------
WORKS = [r for r in ROWS if r.raises is None and r.entry not in NO_UPSTREAM]


def test_every_works_row_says_how_upstream_treats_it():
    missing = [f"{r.entry}: {r.case}" for r in WORKS if r.upstream is None]
    assert not missing, f"works rows without an upstream comparison: {missing}"


def _same(ours, theirs, where="result"):
    """Equal results: waveforms and codes bit for bit, prompt items field by field."""
    if isinstance(ours, tuple) and len(ours) == 2 and isinstance(ours[1], int):  # (wavs, sample rate)
        assert ours[1] == theirs[1], f"{where}: sample rate {ours[1]} vs {theirs[1]}"
        ours, theirs = ours[0], theirs[0]
    if isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), f"{where}: {len(ours)} items vs {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _same(a, b, f"{where}[{i}]")
        return
    if hasattr(ours, "ref_spk_embedding"):  # a voice-clone prompt item (ours or upstream's)
        for field in ("ref_spk_embedding", "ref_code", "x_vector_only_mode", "icl_mode", "ref_text"):
            _same(getattr(ours, field), getattr(theirs, field), f"{where}.{field}")
        return
    if isinstance(ours, np.ndarray):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, f"{where}: {ours.shape} vs {theirs.shape}"
        assert np.array_equal(ours, theirs), f"{where}: max diff {np.abs(ours - theirs).max()}"
        return
    if isinstance(ours, torch.Tensor):
        theirs = theirs.to(ours.device)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, f"{where}: {ours.shape} vs {theirs.shape}"
        assert torch.equal(ours, theirs), f"{where}: max diff {(ours.double() - theirs.double()).abs().max()}"
        return
    assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"


def test_same_is_sharp():
    """The comparison behind the works rows sees one ulp, a sample rate and a flag."""
    wav = np.linspace(-1, 1, 50, dtype=np.float32)
    off = wav.copy()
    off[7] = np.nextafter(off[7], np.float32(2))
    for a, b in [
        (([wav], 24000), ([off], 24000)),
        (([wav], 24000), ([wav], 16000)),
        ([torch.ones(3)], [torch.ones(4)]),
    ]:
        with pytest.raises(AssertionError):
            _same(a, b)
    _same(([wav], 24000), ([wav.copy()], 24000))


@pytest.mark.parametrize("row", WORKS, ids=[f"{r.entry}:{r.case}" for r in WORKS])
def test_works_row_as_upstream(load_models, row):
    up, m = load_models(row.model_type, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(row.upstream, Refuses):
            with pytest.raises(Exception, match=row.upstream.error):
                row.upstream.call(up, m)
            row.call(m)  # and ours does not
            return
        torch.manual_seed(0)
        ours = row.call(m)
        torch.manual_seed(0)
        theirs = row.call(up) if row.upstream == SAME else row.upstream(up, m)
    _same(ours, theirs)


# --- the CLI -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, checkpoints, load_standalone):
    root = tmp_path_factory.mktemp("cli-inputs")
    groups = load_standalone("base").config.talker.num_code_groups
    wav = root / "ref.wav"
    sf.write(str(wav), speech_like_waveform(0), 24000)
    (root / "junk.bin").write_bytes(b"\x00\x01 not audio, not npy, not json \xff")
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (4, groups), generator=g).numpy()
    np.save(root / "codes.npy", codes)
    np.save(root / "float_codes.npy", codes.astype(np.float32) + 0.5)
    np.save(root / "big_codes.npy", np.full_like(codes, 99999))
    line = {"audio": str(wav), "text": "hello there", "ref_audio": str(wav)}
    (root / "raw.jsonl").write_text(json.dumps(line) + "\n")
    (root / "train.jsonl").write_text(
        "".join(json.dumps({**line, "audio_codes": codes.tolist()[: n + 2]}) + "\n" for n in range(2))
    )
    return dict(
        custom_voice=str(checkpoints["custom_voice"][1]),
        voice_design=str(checkpoints["voice_design"][1]),
        base=str(checkpoints["base"][1]),
        upstream_base=str(checkpoints["base"][0]),
        wav=str(wav),
        junk=str(root / "junk.bin"),
        codes=str(root / "codes.npy"),
        float_codes=str(root / "float_codes.npy"),
        big_codes=str(root / "big_codes.npy"),
        train=str(root / "train.jsonl"),
        raw=str(root / "raw.jsonl"),
    )


@pytest.mark.parametrize("row", CLI_ROWS, ids=[f"{r.command}:{r.case}" for r in CLI_ROWS])
def test_cli_row(cli_files, tmp_path, row):
    values = dict(cli_files, tmp=str(tmp_path), out=str(tmp_path / "out.wav"))
    args = [row.command] + [a.format(**values) for a in row.args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == row.exit_code, (result.exit_code, result.stderr, result.exception)
    if row.exit_code == 0:
        return
    if "--debug" in row.args:  # the exception itself comes through, traceback and all
        text = f"{type(result.exception).__name__}: {result.exception}"
    else:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("q3tts: error: "), result.stderr
        assert "Traceback" not in result.stderr
        text = lines[0]
    assert re.search(row.match, text), text


def test_every_cli_option_has_a_row():
    """Each option and argument of the four commands is the subject of at least one row."""
    missing = []
    for name in ("synthesize", "encode", "finetune", "prepare-data"):
        cases = [r.case for r in CLI_ROWS if r.command == name]
        for param in main.commands[name].params:
            names = param.opts + param.secondary_opts if param.param_type_name == "option" else [param.name.upper()]
            pattern = "|".join(rf"(^|\s){re.escape(n)}(\s|:|$)" for n in names)
            if not any(re.search(pattern, c) for c in cases):
                missing.append(f"{name} {names[0]}")
    assert not missing, f"CLI options without a catalogue row: {missing}"


def test_fuzz_example_count_is_stated():
    """docs/bad-inputs.md states how many examples the fuzzer tries per run: keep it true."""
    import test_fuzz_inputs as fuzz

    properties = [f for f in vars(fuzz).values() if getattr(f, "is_hypothesis_test", False)]
    assert sum(f._hypothesis_internal_use_settings.max_examples for f in properties) == FUZZ_EXAMPLES_PER_RUN


def test_docs_table_is_current():
    doc = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
    assert doc.read_text(encoding="utf-8") == render_markdown(), "run: python -m tests.bad_inputs"
