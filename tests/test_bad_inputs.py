"""Every row of the bad-input catalogue (tests/bad_inputs.py) behaves as decided, and
docs/bad-inputs.md is rendered from the current catalogue."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from bad_inputs import ROWS, render_markdown  # tests/ is on sys.path (pytest prepend import mode)

from q3tts.standalone import Qwen3TTS

_models: dict = {}


@pytest.fixture(scope="module")
def model_of(checkpoints):
    def get(model_type):
        if model_type not in _models:
            _models[model_type] = Qwen3TTS.from_pretrained(checkpoints[model_type][1])
        return _models[model_type]

    return get


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.entry}:{r.case}" for r in ROWS])
def test_catalogue_row(model_of, row):
    m = model_of(row.model_type)
    if row.raises is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.call(m)
        return
    with pytest.raises(row.raises) as info:
        row.call(m)
    assert re.search(row.match, str(info.value)), f"{type(info.value).__name__}: {info.value}"


def test_docs_table_is_current():
    doc = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
    assert doc.read_text(encoding="utf-8") == render_markdown(), "run: python -m tests.bad_inputs"
