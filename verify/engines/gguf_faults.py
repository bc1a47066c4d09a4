"""Planted conversion faults for the GGUF target, each of which verify's qwentts.cpp checks
must catch and name (the converter's fault self-test).

Each fault is a hook for ``convert_to_gguf(..., _fault=hook)`` that alters one thing on its way
into the file, as a converter bug would:

- ``swap_qk``: layer 0's q and k norms exchanged (a swapped q/k);
- ``rope_flag``: the M-RoPE interleaved flag written inverted under the loader's key;
- ``special_token``: ``<|im_start|>`` moved off the id config.json names;
- ``codebook_unnormalised``: the first decoder codebook written as embedding_sum, not divided by
  cluster_usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def _swap_qk(stage, **kw):
    if stage == "tensor":
        name, reader, out = kw["name"], kw["reader"], kw["out"]
        other = {
            "talker.blk.0.attn_q_norm.weight": "self_attn.k_norm.weight",
            "talker.blk.0.attn_k_norm.weight": "self_attn.q_norm.weight",
        }.get(name)
        if other:
            return reader.get(out.inputs[0].rsplit("self_attn.", 1)[0] + other).float().numpy()
        return kw["array"]


def _rope_flag(stage, **kw):
    if stage == "meta" and kw["part"] == "talker":
        rs = kw["ctx"]["talker"].setdefault("rope_scaling", {})
        kw["ctx"]["talker"] = {
            **kw["ctx"]["talker"],
            "rope_scaling": {**rs, "interleaved": not rs.get("interleaved", False)},
        }
    if stage == "tensor":
        return kw["array"]


def _special_token(stage, **kw):
    if stage == "tokenizer":
        tokens, types = kw["tokens"], kw["types"]
        i = tokens.index("<|im_start|>")
        j = i - 1  # its neighbour: the configured id now holds another token
        tokens[i], tokens[j] = tokens[j], tokens[i]
        types[i], types[j] = types[j], types[i]
    if stage == "tensor":
        return kw["array"]


def _codebook_unnormalised(stage, **kw):
    if stage == "tensor":
        if kw["name"] == "tok_dec.vq_first.0.codebook":
            return kw["reader"].get(kw["out"].inputs[0]).float().numpy()
        return kw["array"]


FAULTS: dict[str, Callable] = {
    "swap_qk": _swap_qk,
    "rope_flag": _rope_flag,
    "special_token": _special_token,
    "codebook_unnormalised": _codebook_unnormalised,
}


# What the engine check must name for each fault: the stage or tensor it lives in.
EXPECTED_NAMES = {
    "swap_qk": "talker-hidden-prefill-l0",
    "rope_flag": "mrope_interleaved",
    "special_token": "im_start_token_id",
    "codebook_unnormalised": "tok_dec.vq_first.0.codebook",
}


def plant(name: str, upstream_dir: str | Path, dst: str | Path, quant: str = "F32") -> Path:
    from q3tts.standalone.gguf_conversion import convert_to_gguf

    return convert_to_gguf(upstream_dir, dst, quant=quant, _fault=FAULTS[name]).dst


def detect(model, upstream_dir: str | Path, gguf_dir: str | Path, **request: Any) -> dict[str, Any]:
    """Run the static audit and the stage comparison; ``caught`` lists what names the fault."""
    from q3tts.verify.engines.gguf import audit_gguf, stage_report

    audit = audit_gguf(upstream_dir, gguf_dir)
    stages = stage_report(model, gguf_dir, **request)
    caught = list(audit["problems"])
    if stages["first_bad"]:
        caught.append(f"stage {stages['first_bad']} differs: {stages['stages'][stages['first_bad']]}")
    return {"caught": caught, "audit": audit, "stages": stages}
