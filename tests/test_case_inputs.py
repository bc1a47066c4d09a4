"""Case inputs come from upstream's side, never from the model under test (issue 27): a converted
checkpoint that lost its speakers' dialects must fail the dialect cases, because the cases still ask
for upstream's dialect speaker."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.verify.cases.suite import run_suite

pytestmark = pytest.mark.reference  # upstream's side gives the inputs


def drop_dialects(config_path) -> None:
    """Every dialect in the converted config.json set to false, with spaces padding the file to its
    size (the manifest's size check on load then still passes: a converter that dropped the field)."""
    text = config_path.read_text(encoding="utf-8")
    cfg = json.loads(text)
    dialects = {v for v in cfg["talker"]["spk_is_dialect"].values() if v is not False}
    assert dialects, "the fixture has a dialect speaker"
    for d in dialects:  # as a value only (a dialect is also a key of codec_language_id)
        quoted = json.dumps(d)
        padded = "false".ljust(len(quoted))
        text = re.sub(r"(:\s*)" + re.escape(quoted), lambda m: m.group(1) + padded, text)  # noqa: B023
    assert all(v is False for v in json.loads(text)["talker"]["spk_is_dialect"].values())
    config_path.write_text(text, encoding="utf-8")


def test_a_checkpoint_without_its_dialects_fails_the_dialect_cases(checkpoints, load_models, tmp_path):
    wrapper, clean = load_models("custom_voice", torch.float32)
    broken_dir = tmp_path / "no-dialects"
    shutil.copytree(checkpoints["custom_voice"][1], broken_dir)
    drop_dialects(broken_dir / "config.json")
    broken = Qwen3TTS.from_pretrained(broken_dir, dtype=torch.float32)

    def failing(standalone):
        results = run_suite(
            wrapper, standalone, "custom_voice", torch.float32, [0], 12, "inputs-cv", audio=False, encoder=False
        )
        return {r.case for r in results if not r.passed}

    assert failing(clean) == set()
    failed = failing(broken)
    # The dialect cases, and the custom-voice batches, whose second row is the dialect speaker.
    dialect_cases = {c for c in failed if re.search(r"dialect|batch\.(custom_voice|eos_override)", c)}
    assert any("custom_voice.dialect" in c for c in failed), failed
    assert failed == dialect_cases, (
        f"only the cases with the dialect speaker may fail: {sorted(failed - dialect_cases)}"
    )
