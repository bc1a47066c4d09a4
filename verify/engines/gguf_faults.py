"""Planted conversion faults for the GGUF target, each of which verify's qwentts.cpp checks
must catch and name (the converter's fault self-test).

Each fault is a hook for ``convert_to_gguf(..., _fault=hook)`` that alters one thing on its way
into the file, as a converter bug would:

- ``swap_qk``: layer 0's q and k norms exchanged (a swapped q/k);
- ``rope_flag``: the M-RoPE interleaved flag written inverted under the loader's key;
- ``special_token``: ``<|im_start|>`` moved off the id config.json names;
- ``codebook_unnormalised``: the first decoder codebook written as embedding_sum, not divided by
  cluster_usage.

The last three of those are what ``audit_gguf`` reads statically. The engine faults below are
invisible to it (``ENGINE_FAULTS``: the self-test requires the audit to find nothing), so only
running the engine can catch them; each sits in a part the prefill dumps never reach:

- ``cp_head_swap``: the code predictor's heads of groups 4 and 5 exchanged (lm_head.3/.4);
- ``decoder_rest_scaled``: the decoder's projection of codebooks 1..15 (vq_rest.output_proj)
  scaled by 1.5, so everything the decoder adds beyond codebook 0 is 1.5x too loud;
- ``spk_enc_kernel_flipped``: the speaker encoder's first conv kernel written time-reversed (a
  convolution / correlation mix-up), run only in the Base case's x-vector extraction.
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


def _cp_head_swap(stage, **kw):
    if stage == "tensor":
        other = {"code_pred.lm_head.3.weight": "4", "code_pred.lm_head.4.weight": "3"}.get(kw["name"])
        if other:
            return kw["reader"].get(f"talker.code_predictor.lm_head.{other}.weight").float().numpy()
        return kw["array"]


def _decoder_rest_scaled(stage, **kw):
    if stage == "tensor":
        return kw["array"] * 1.5 if kw["name"] == "tok_dec.vq_rest.output_proj.weight" else kw["array"]


def _spk_enc_kernel_flipped(stage, **kw):
    if stage == "tensor":
        # [out, in, kernel]: reversing the taps turns the convolution into its mirror image
        return kw["array"][..., ::-1].copy() if kw["name"] == "spk_enc.conv0.weight" else kw["array"]


FAULTS: dict[str, Callable] = {
    "swap_qk": _swap_qk,
    "rope_flag": _rope_flag,
    "special_token": _special_token,
    "codebook_unnormalised": _codebook_unnormalised,
    "cp_head_swap": _cp_head_swap,
    "decoder_rest_scaled": _decoder_rest_scaled,
    "spk_enc_kernel_flipped": _spk_enc_kernel_flipped,
}

# Faults the static audit cannot see: only the engine's run (codes, audio, x-vector) shows them.
ENGINE_FAULTS = ("cp_head_swap", "decoder_rest_scaled", "spk_enc_kernel_flipped")


# What the engine check must name for each fault: the stage, tensor or code group it lives in.
EXPECTED_NAMES = {
    "swap_qk": "talker-hidden-prefill-l0",
    "rope_flag": "mrope_interleaved",
    "special_token": "im_start_token_id",
    "codebook_unnormalised": "tok_dec.vq_first.0.codebook",
    "cp_head_swap": "code-predictor group 4 ",
    "decoder_rest_scaled": "log-mel",
    "spk_enc_kernel_flipped": "spk-emb",
}


def plant(name: str, upstream_dir: str | Path, dst: str | Path, quant: str = "F32") -> Path:
    from q3tts.standalone.gguf_conversion import convert_to_gguf

    return convert_to_gguf(upstream_dir, dst, quant=quant, _fault=FAULTS[name]).dst


def detect(model, upstream_dir: str | Path, gguf_dir: str | Path, **request: Any) -> dict[str, Any]:
    """Run the static audit and the stage comparison; ``caught`` lists what names the fault,
    ``not_checked`` the stages the engine did not dump."""
    from q3tts.verify.engines.gguf import audit_gguf, stage_report

    audit = audit_gguf(upstream_dir, gguf_dir)
    stages = stage_report(model, gguf_dir, **request)
    caught = list(audit["problems"])
    if stages["first_bad"]:
        caught.append(f"stage {stages['first_bad']} differs: {stages['stages'][stages['first_bad']]}")
    return {"caught": caught, "audit": audit, "stages": stages, "not_checked": stages["not_checked"]}
