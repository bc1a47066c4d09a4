"""Generated codes equal upstream's exactly: every voice mode, all model types, greedy and
seeded sampling in fp32; greedy in bf16 with the first divergence reported."""

from __future__ import annotations

import pytest
import torch

from q3tts.verify.cases.generation import CASES, CaseContext, format_codes_table, run_case
from q3tts.verify.fixtures.writer import MODEL_TYPES

pytestmark = pytest.mark.reference  # drives upstream qwen-tts

PARAMS = [(mt, case) for mt in MODEL_TYPES for case in CASES if mt in case.model_types]


@pytest.mark.parametrize("mode", ["greedy", "sampled", "sampled_top_p"])
@pytest.mark.parametrize("model_type, case", PARAMS, ids=[f"{mt}-{c.name}" for mt, c in PARAMS])
def test_fp32_codes_identical(load_models, model_type, case, mode):
    wrapper, standalone = load_models(model_type, torch.float32)
    r = run_case(case, CaseContext(wrapper, standalone, seed=7), mode, "fp32")
    assert r.identical, format_codes_table([r])
    assert r.hidden_max_abs <= 1e-5, r.hidden_max_abs
    # A case that stops at once proves nothing about the loop.
    assert max(r.frames_upstream) >= 2


@pytest.mark.parametrize("model_type, case", PARAMS, ids=[f"{mt}-{c.name}" for mt, c in PARAMS])
def test_bf16_greedy_codes(load_models, model_type, case):
    wrapper, standalone = load_models(model_type, torch.bfloat16)
    r = run_case(case, CaseContext(wrapper, standalone, seed=7), "greedy", "bf16")
    if not r.identical:
        item, frame, group = r.first_divergence
        # bf16 may diverge eventually; it must agree over the first frames, and say where it stops.
        assert frame >= 4, format_codes_table([r])
        pytest.xfail(f"bf16 greedy diverges at item {item}, frame {frame}, group {group}")


def test_sampling_differs_between_seeds(load_models):
    """Sharpness: sampled codes depend on the RNG, so equal codes under equal seeds mean something."""
    wrapper, standalone = load_models("custom_voice", torch.float32)
    case = next(c for c in CASES if c.name == "custom_voice.english")
    ctx = CaseContext(wrapper, standalone, seed=7)
    kwargs = dict(case.build(ctx), do_sample=True, subtalker_dosample=True, max_new_tokens=24)
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outs.append(standalone.generate(**kwargs)[0][0])
    assert outs[0].shape != outs[1].shape or not torch.equal(outs[0], outs[1])
