"""Shared fixtures: tiny upstream checkpoints of all three types, their conversions, and both
sides loaded once per session (building and loading dominate the suite's run time)."""

from __future__ import annotations

import os

# Tests never touch the network: upstream's loaders must resolve everything locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from q3tts.convert import convert_checkpoint
from q3tts.standalone import Qwen3TTS
from q3tts.verify.fixtures import MODEL_TYPES, write_upstream_checkpoint

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{model_type: (upstream_dir, standalone_dir)} for every model type."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for mt in MODEL_TYPES:
        up = write_upstream_checkpoint(root / f"upstream-{mt}", mt, seed=10 + MODEL_TYPES.index(mt))
        st = root / f"standalone-{mt}"
        convert_checkpoint(up, st)
        out[mt] = (up, st)
    return out


_loaded: dict = {}


@pytest.fixture(scope="session")
def load_models(checkpoints):
    """load_models(model_type, dtype) -> (upstream Qwen3TTSModel wrapper, standalone Qwen3TTS),
    loaded once per session."""
    from q3tts.verify.forward_parity import load_upstream_wrapper

    def load(model_type: str, dtype: torch.dtype):
        key = (model_type, dtype)
        if key not in _loaded:
            up_dir, st_dir = checkpoints[model_type]
            _loaded[key] = (load_upstream_wrapper(up_dir, dtype), Qwen3TTS.from_pretrained(st_dir, dtype=dtype))
        return _loaded[key]

    return load


@pytest.fixture(scope="session")
def load_pair(load_models):
    """load_pair(model_type, dtype) -> (upstream Qwen3TTSForConditionalGeneration, standalone)."""

    def load(model_type: str, dtype: torch.dtype):
        wrapper, standalone = load_models(model_type, dtype)
        return wrapper.model, standalone

    return load
