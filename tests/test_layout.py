"""The layout map: complete, consumed exactly once, reversible bit for bit, right at real size."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from q3tts.standalone.config import Qwen3TTSConfig
from q3tts.standalone.layout import Direction, convert_tensors, plan
from q3tts.verify.fixtures.released import released_config
from q3tts.verify.fixtures.writer import MODEL_TYPES, tiny_config

# Tensor and parameter counts of the released checkpoints (upstream.md 1.4, meta instantiation).
RELEASED_COUNTS = {
    ("1.7B", "base"): (480, 1_928_677_440),
    ("1.7B", "custom_voice"): (404, 1_916_676_352),
    ("1.7B", "voice_design"): (404, 1_916_676_352),
    ("0.6B", "base"): (478, 914_643_008),
    ("0.6B", "custom_voice"): (402, 905_788_672),
}


@pytest.mark.parametrize("size, model_type", sorted(RELEASED_COUNTS))
def test_plan_matches_released_tensor_and_parameter_counts(size, model_type):
    entries = plan(Qwen3TTSConfig.from_upstream(released_config(size, model_type)))
    n_tensors = sum(len(e.sources) for e in entries)
    n_params = sum(math.prod(s) for e in entries for s in e.source_shapes)
    assert (n_tensors, n_params) == RELEASED_COUNTS[(size, model_type)]
    assert n_params == sum(math.prod(e.target_shape) for e in entries)


@pytest.mark.reference
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_plan_equals_upstream_state_dict(model_type):
    """Every upstream tensor name appears exactly once in the plan, with upstream's shape."""
    from q3tts.verify.fixtures.writer import build_upstream_modules

    cfg = tiny_config(model_type)
    upstream = {k: tuple(v.shape) for k, v in build_upstream_modules(cfg).state_dict().items()}
    entries = plan(Qwen3TTSConfig.from_upstream(cfg))
    planned = [(s, shape) for e in entries for s, shape in zip(e.sources, e.source_shapes)]
    assert len({s for s, _ in planned}) == len(planned)
    assert dict(planned) == upstream


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_round_trip_is_bit_identical(checkpoints, model_type):
    up_dir, st_dir = checkpoints[model_type]
    original = load_file(str(up_dir / "model.safetensors"))
    converted = load_file(str(st_dir / "model.safetensors"))
    import json

    cfg = Qwen3TTSConfig.from_dict(json.loads((st_dir / "config.json").read_text()))
    back = dict(convert_tensors(plan(cfg), converted.__getitem__, direction=Direction.TO_UPSTREAM))
    assert set(back) == set(original)
    for name, t in original.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_config_round_trips_through_standalone_json():
    for mt in MODEL_TYPES:
        cfg = Qwen3TTSConfig.from_upstream(tiny_config(mt))
        assert Qwen3TTSConfig.from_dict(cfg.to_dict()) == cfg
