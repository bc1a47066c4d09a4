"""The bad-input catalogue of the `q3tts` CLI: one row per option (every option of synthesize,
encode, finetune and prepare-data has at least one; a test checks it), its decided behaviour.

Usage errors (a bad option value or combination) print one line, ``q3tts: error: ...``, and exit
2; an input that cannot be used (a missing checkpoint, an unreadable file, bad data) exits 1; a
good call exits 0. ``--debug`` lets the exception through with its traceback.

Arguments use placeholders filled by tests/test_bad_inputs.py: {custom_voice} {voice_design}
{base} (standalone fixture checkpoints), {upstream_base} (an upstream one), {wav} (a 24 kHz
reference), {junk} (a file that is no audio, no .npy and no JSON), {codes} {float_codes}
{big_codes} (.npy reference codes), {train} (a good training JSONL), {raw} (a good raw JSONL),
{tmp} (an empty directory) and {out} (a file path in it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CliRow:
    command: str
    case: str
    args: tuple[str, ...]  # after the command name
    exit_code: int  # 0 works, 1 unusable input (or --debug's traceback), 2 usage error
    match: str = ""  # pattern of the one stderr line (exit 1/2) or what it does (exit 0)


SYN = ("--model", "{custom_voice}", "--text", "Hi.", "--out", "{out}", "--speaker", "alice", "--max-new-tokens", "3")
CLONE = ("--model", "{base}", "--text", "Hi.", "--out", "{out}", "--ref-audio", "{wav}", "--max-new-tokens", "3")
ENC = ("--model", "{base}", "--out", "{tmp}/codes", "{wav}")
FT = ("--model", "{base}", "--train-jsonl", "{train}", "--speaker-name", "voice", "--out", "{tmp}/ft", "--no-progress")
PREP = ("{raw}", "--model", "{base}", "--out", "{tmp}/prepared.jsonl", "--no-progress")


def _without(args: tuple[str, ...], option: str) -> tuple[str, ...]:
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def _with(args: tuple[str, ...], option: str, value: str) -> tuple[str, ...]:
    return _without(args, option) + (option, value) if option in args else args + (option, value)


CLI_ROWS: tuple[CliRow, ...] = (
    # --- synthesize ----------------------------------------------------------------------------
    CliRow("synthesize", "a good call", SYN + ("--seed", "1"), 0, "writes the wav"),
    CliRow("synthesize", "--model missing", _without(SYN, "--model"), 2, r"Missing option '--model'"),
    CliRow(
        "synthesize", "--model no such directory", _with(SYN, "--model", "{tmp}/nope"), 1, r"nope: no such directory"
    ),
    CliRow(
        "synthesize",
        "--no-convert on an upstream checkpoint",
        _with(CLONE, "--model", "{upstream_base}") + ("--no-convert",),
        1,
        r"is an upstream qwen-tts checkpoint and conversion is off .* convert it first",
    ),
    CliRow("synthesize", "--no-convert on a standalone checkpoint", SYN + ("--no-convert",), 0, "loads it"),
    CliRow("synthesize", "--text empty", _with(SYN, "--text", ""), 2, r"text is empty or whitespace only"),
    CliRow(
        "synthesize",
        "--text with undecodable bytes (a lone surrogate)",
        _with(SYN, "--text", "Hi \udcff"),
        2,
        r"text is not valid Unicode \(surrogates not allowed at position 3",
    ),
    CliRow(
        "synthesize",
        "--out in a missing directory",
        _with(SYN, "--out", "{tmp}/no/x.wav"),
        2,
        r"output directory does not exist",
    ),
    CliRow(
        "synthesize",
        "--out a directory",
        _with(SYN, "--out", "{tmp}"),
        2,
        r"Invalid value for '--out'.* is a directory",
    ),
    CliRow(
        "synthesize",
        "--out - without --stream",
        _with(SYN, "--out", "-"),
        2,
        r"--out - \(PCM to stdout\) needs --stream",
    ),
    CliRow("synthesize", "--speaker unknown", _with(SYN, "--speaker", "zed"), 2, r"unsupported speakers: \['zed'\]"),
    CliRow(
        "synthesize",
        "--speaker missing (custom voice)",
        _without(SYN, "--speaker"),
        2,
        r"--speaker is required for a custom_voice model",
    ),
    CliRow(
        "synthesize",
        "--speaker on a base model",
        CLONE + ("--speaker", "alice"),
        2,
        r"--speaker applies to custom_voice models; this checkpoint is 'base'",
    ),
    CliRow(
        "synthesize",
        "--instruct on a base model",
        CLONE + ("--instruct", "calm"),
        2,
        r"--instruct applies to custom_voice and voice_design models",
    ),
    CliRow(
        "synthesize",
        "--instruct missing (voice design)",
        _without(_with(SYN, "--model", "{voice_design}"), "--speaker"),
        2,
        r"--instruct is required for a voice_design model",
    ),
    CliRow(
        "synthesize",
        "--ref-audio missing (base)",
        CLONE[:-4] + ("--max-new-tokens", "3"),
        2,
        r"--ref-audio is required for a base model",
    ),
    CliRow(
        "synthesize",
        "--ref-audio no such file",
        _with(CLONE, "--ref-audio", "{tmp}/none.wav"),
        2,
        r"Invalid value for '--ref-audio'.* does not exist",
    ),
    CliRow(
        "synthesize", "--ref-audio not audio", _with(CLONE, "--ref-audio", "{junk}"), 1, r"junk.bin: cannot read audio"
    ),
    CliRow(
        "synthesize",
        "--ref-audio on a custom-voice model",
        SYN + ("--ref-audio", "{wav}"),
        2,
        r"--ref-audio applies to base models; this checkpoint is 'custom_voice'",
    ),
    CliRow(
        "synthesize",
        "--ref-text on a custom-voice model",
        SYN + ("--ref-text", "hello"),
        2,
        r"--ref-text applies to base models",
    ),
    CliRow(
        "synthesize",
        "--ref-codes without --ref-text",
        CLONE + ("--ref-codes", "{codes}"),
        2,
        r"--ref-codes needs --ref-text",
    ),
    CliRow(
        "synthesize",
        "--ref-codes not an .npy",
        CLONE + ("--ref-text", "a b", "--ref-codes", "{junk}"),
        1,
        r"--ref-codes .*junk.bin: cannot read codes",
    ),
    CliRow(
        "synthesize",
        "--ref-codes float",
        CLONE + ("--ref-text", "a b", "--ref-codes", "{float_codes}"),
        2,
        r"ref_code must hold integer codes, got dtype torch.float32",
    ),
    CliRow(
        "synthesize",
        "--ref-codes past the codebook",
        CLONE + ("--ref-text", "a b", "--ref-codes", "{big_codes}"),
        2,
        r"ref_code has code 99999",
    ),
    CliRow(
        "synthesize",
        "--ref-codes on a custom-voice model",
        SYN + ("--ref-codes", "{codes}"),
        2,
        r"--ref-codes applies to base models",
    ),
    CliRow(
        "synthesize", "--language unknown", SYN + ("--language", "klingon"), 2, r"unsupported languages: \['klingon'\]"
    ),
    CliRow(
        "synthesize",
        "--dtype unknown",
        SYN + ("--dtype", "fp64"),
        2,
        r"Invalid value for '--dtype': 'fp64' is not one of 'keep', 'fp32', 'bf16'",
    ),
    CliRow("synthesize", "--dtype bf16-mixed", SYN + ("--dtype", "bf16-mixed"), 0, "writes the wav (mixed precision)"),
    CliRow(
        "synthesize",
        "--seed not a number",
        SYN + ("--seed", "x"),
        2,
        r"Invalid value for '--seed': 'x' is not a valid integer",
    ),
    CliRow(
        "synthesize",
        "--seed past torch's range",
        SYN + ("--seed", str(2**64)),
        2,
        r"Invalid value for '--seed': 18446744073709551616 is not in the range",
    ),
    CliRow(
        "synthesize", "--greedy with a value", SYN + ("--greedy=yes",), 2, r"Option '--greedy' does not take a value"
    ),
    CliRow(
        "synthesize",
        "--max-new-tokens 0",
        _with(SYN, "--max-new-tokens", "0"),
        2,
        r"Invalid value for '--max-new-tokens': 0 is not in the range x>=1",
    ),
    CliRow(
        "synthesize",
        "--progress with a value",
        SYN + ("--progress=yes",),
        2,
        r"Option '--progress' does not take a value",
    ),
    CliRow(
        "synthesize", "--stream with a value", SYN + ("--stream=yes",), 2, r"Option '--stream' does not take a value"
    ),
    CliRow("synthesize", "--fast with a value", SYN + ("--fast=yes",), 2, r"Option '--fast' does not take a value"),
    CliRow(
        "synthesize",
        "--quant without --fast",
        SYN + ("--quant", "int8"),
        2,
        r"--quant runs on the fast path: add --fast",
    ),
    CliRow(
        "synthesize",
        "--quant unknown",
        SYN + ("--fast", "--quant", "int3"),
        2,
        r"quant 'int3' is not one of none, int8, int4",
    ),
    CliRow(
        "synthesize",
        "--chunk-frames 0",
        SYN + ("--stream", "--chunk-frames", "0"),
        2,
        r"Invalid value for '--chunk-frames': 0 is not in the range x>=1",
    ),
    CliRow(
        "synthesize",
        "--first-chunk-frames -1",
        SYN + ("--stream", "--first-chunk-frames", "-1"),
        2,
        r"Invalid value for '--first-chunk-frames': -1 is not in the range x>=1",
    ),
    CliRow(
        "synthesize",
        "--debug on a usage error",
        _with(SYN, "--speaker", "zed") + ("--debug",),
        1,
        r"ValueError: unsupported speakers",
    ),
    CliRow("synthesize", "an unknown option", SYN + ("--temperature", "0.5"), 2, r"No such option '--temperature'"),
    # --- encode ---------------------------------------------------------------------------------
    CliRow("encode", "a good call", ENC, 0, "writes one .npy per input"),
    CliRow("encode", "INPUTS missing", ENC[:-1], 2, r"Missing argument 'INPUTS\.\.\.'"),
    CliRow("encode", "INPUTS: no such file", ENC[:-1] + ("{tmp}/none.wav",), 1, r"none.wav: cannot read audio"),
    CliRow("encode", "INPUTS: not audio", ENC[:-1] + ("{junk}",), 1, r"junk.bin: cannot read audio"),
    CliRow("encode", "INPUTS: two with one stem", ENC + ("{tmp}/sub/ref.wav",), 2, r"would both write ref.npy"),
    CliRow("encode", "--model missing", _without(ENC, "--model"), 2, r"Missing option '--model'"),
    CliRow(
        "encode",
        "--model on a custom-voice checkpoint",
        _with(ENC, "--model", "{custom_voice}"),
        0,
        "every checkpoint ships the speech tokenizer",
    ),
    CliRow(
        "encode",
        "--no-convert on an upstream checkpoint",
        _with(ENC, "--model", "{upstream_base}") + ("--no-convert",),
        1,
        r"convert it first",
    ),
    CliRow("encode", "--out a file", _with(ENC, "--out", "{junk}"), 2, r"Invalid value for '--out'.* is a file"),
    CliRow(
        "encode",
        "--dtype keep",
        ENC + ("--dtype", "keep"),
        2,
        r"Invalid value for '--dtype': 'keep' is not one of 'fp32', 'bf16'",
    ),
    CliRow(
        "encode", "--progress with a value", ENC + ("--progress=1",), 2, r"Option '--progress' does not take a value"
    ),
    CliRow(
        "encode",
        "--debug on an unreadable input",
        ENC[:-1] + ("{junk}", "--debug"),
        1,
        r"AudioReadError: .*cannot read audio",
    ),
    # --- finetune -------------------------------------------------------------------------------
    CliRow("finetune", "a good call", FT + ("--epochs", "1", "--grad-accum", "1"), 0, "writes checkpoint-epoch-0"),
    CliRow(
        "finetune",
        "--model a custom-voice checkpoint",
        _with(FT, "--model", "{custom_voice}"),
        2,
        r"fine-tuning starts from a Base checkpoint \(this one is 'custom_voice'\)",
    ),
    CliRow(
        "finetune",
        "--no-convert on an upstream checkpoint",
        _with(FT, "--model", "{upstream_base}") + ("--no-convert",),
        1,
        r"convert it first",
    ),
    CliRow(
        "finetune",
        "--train-jsonl no such file",
        _with(FT, "--train-jsonl", "{tmp}/none.jsonl"),
        2,
        r"Invalid value for '--train-jsonl'.* does not exist",
    ),
    CliRow(
        "finetune",
        "--train-jsonl not UTF-8",
        _with(FT, "--train-jsonl", "{junk}"),
        1,
        r"junk.bin: not UTF-8 text \(invalid start byte at byte \d+\)",
    ),
    CliRow("finetune", "--speaker-name upper case", _with(FT, "--speaker-name", "Voice"), 2, r"speaker name"),
    CliRow("finetune", "--speaker-name missing", _without(FT, "--speaker-name"), 2, r"Missing option '--speaker-name'"),
    CliRow("finetune", "--out a file", _with(FT, "--out", "{junk}"), 2, r"Invalid value for '--out'.* is a file"),
    CliRow(
        "finetune", "--epochs 0", FT + ("--epochs", "0"), 2, r"Invalid value for '--epochs': 0 is not in the range x>=1"
    ),
    CliRow("finetune", "--lr 0", FT + ("--lr", "0"), 2, r"Invalid value for '--lr': 0.0 is not in the range x>0"),
    CliRow("finetune", "--lr nan", FT + ("--lr", "nan"), 2, r"lr must be finite and > 0, got nan"),
    CliRow(
        "finetune",
        "--batch-size 0",
        FT + ("--batch-size", "0"),
        2,
        r"Invalid value for '--batch-size': 0 is not in the range x>=1",
    ),
    CliRow(
        "finetune",
        "--grad-accum 0",
        FT + ("--grad-accum", "0"),
        2,
        r"Invalid value for '--grad-accum': 0 is not in the range x>=1",
    ),
    CliRow(
        "finetune", "--seed past torch's range", FT + ("--seed", str(-(2**63) - 1)), 2, r"Invalid value for '--seed'"
    ),
    CliRow(
        "finetune",
        "--recipe unknown",
        FT + ("--recipe", "fast"),
        2,
        r"Invalid value for '--recipe': 'fast' is not one of 'aligned', 'upstream'",
    ),
    CliRow(
        "finetune",
        "--dtype fp16",
        FT + ("--dtype", "fp16"),
        2,
        r"Invalid value for '--dtype': 'fp16' is not one of 'fp32', 'bf16'",
    ),
    CliRow("finetune", "--save-dtype fp16", FT + ("--save-dtype", "fp16"), 2, r"Invalid value for '--save-dtype'"),
    CliRow(
        "finetune",
        "--gradient-checkpointing with a value",
        FT + ("--gradient-checkpointing=1",),
        2,
        r"Option '--gradient-checkpointing' does not take a value",
    ),
    CliRow(
        "finetune", "--progress with a value", FT + ("--progress=1",), 2, r"Option '--progress' does not take a value"
    ),
    CliRow(
        "finetune",
        "--debug on bad data",
        _with(FT, "--train-jsonl", "{junk}") + ("--debug",),
        1,
        r"DataError: .*junk.bin: not UTF-8 text",
    ),
    # --- prepare-data ---------------------------------------------------------------------------
    CliRow("prepare-data", "a good call", PREP, 0, "writes the JSONL with audio_codes"),
    CliRow(
        "prepare-data",
        "RAW_JSONL no such file",
        ("{tmp}/none.jsonl",) + PREP[1:],
        2,
        r"Invalid value for 'RAW_JSONL'.* does not exist",
    ),
    CliRow(
        "prepare-data",
        "RAW_JSONL not UTF-8",
        ("{junk}",) + PREP[1:],
        1,
        r"junk.bin: not UTF-8 text \(invalid start byte at byte \d+\)",
    ),
    CliRow(
        "prepare-data", "--model no such directory", _with(PREP, "--model", "{tmp}/nope"), 1, r"nope: no such directory"
    ),
    CliRow(
        "prepare-data",
        "--no-convert on an upstream checkpoint",
        _with(PREP, "--model", "{upstream_base}") + ("--no-convert",),
        1,
        r"convert it first",
    ),
    CliRow(
        "prepare-data",
        "--out in a missing directory",
        _with(PREP, "--out", "{tmp}/no/p.jsonl"),
        2,
        r"output directory does not exist",
    ),
    CliRow(
        "prepare-data",
        "--out a directory",
        _with(PREP, "--out", "{tmp}"),
        2,
        r"Invalid value for '--out'.* is a directory",
    ),
    CliRow(
        "prepare-data",
        "--batch-size 0",
        PREP + ("--batch-size", "0"),
        2,
        r"Invalid value for '--batch-size': 0 is not in the range x>=1",
    ),
    CliRow(
        "prepare-data",
        "--progress with a value",
        PREP + ("--progress=1",),
        2,
        r"Option '--progress' does not take a value",
    ),
    CliRow(
        "prepare-data",
        "--debug on bad data",
        ("{junk}",) + PREP[1:] + ("--debug",),
        1,
        r"DataError: .*junk.bin: not UTF-8 text",
    ),
)
