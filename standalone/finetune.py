"""Fine-tuning a Base model into a custom voice: the optimisation loop, the speaker registration
and the checkpoint writer. The forward itself is in training.py.

The loop is upstream's (finetuning/sft_12hz.py at 022e286): AdamW (weight decay 0.01, torch
defaults otherwise), no schedule, gradient accumulation (loss divided by the number of
accumulation steps, the optimiser stepping every N micro-batches and at the end of an epoch, as
accelerate does), gradient-norm clipping at 1.0 on optimiser steps, a shuffled loader.
Precision differs on purpose: "bf16" here is bf16 autocast over fp32 weights (upstream also makes
the weights bf16, so updates below half a bf16 ulp are lost; ours keeps fp32 master weights).

Registration is upstream's: the checkpoint becomes ``custom_voice`` with
``spk_id = {name: 3000}`` (an id in the suppressed range, never generated; the largest id below
the vocabulary size for models with fewer than 3001 codec ids), ``spk_is_dialect = {name: False}``,
the speaker encoder dropped, and the reference x-vector of the first item of the first batch
written into that codec-embedding row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from .output_dir import OWNER_FILE, OutputDir
from .training import TrainingItem, check_item, collate, get_recipe, training_forward

UPSTREAM_SPEAKER_ID = 3000
# Files of a standalone checkpoint that a fine-tuned one rewrites instead of copying.
_REWRITTEN = {
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "manifest.json",
    "upstream_config.json",
    "conversion-report.json",
}


SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.manual_seed accepts


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 2
    grad_accum: int = 4
    seed: int = 0
    recipe: str = "aligned"
    dtype: str = "fp32"  # "fp32" or "bf16" (autocast over fp32 weights)
    gradient_checkpointing: bool = False
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if name == "seed" and not SEED_MIN <= value <= SEED_MAX:
                raise ValueError(f"seed must be in [{SEED_MIN}, {SEED_MAX}] (torch's seed range), got {value}")
            if name != "seed" and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and (value > 0 if name != "weight_decay" else value >= 0)):
                raise ValueError(
                    f"{name} must be finite and {'>= 0' if name == 'weight_decay' else '> 0'}, got {value}"
                )
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {self.dtype!r}")
        get_recipe(self.recipe)


@dataclass
class StepInfo:
    epoch: int
    step: int  # micro-batch index within the epoch
    loss: float
    talker_loss: float
    code_predictor_loss: float
    optimizer_step: bool


def speaker_id_for(config) -> int:
    vocab = config.talker.vocab_size
    return UPSTREAM_SPEAKER_ID if vocab > UPSTREAM_SPEAKER_ID else vocab - 1


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[list[int]]:
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def train_epochs(
    model,
    items: Sequence[TrainingItem],
    speaker_embeddings: torch.Tensor,
    options: FinetuneOptions = FinetuneOptions(),
    on_step: Callable[[StepInfo], None] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Train ``model`` in place; yields (epoch, baked speaker embedding) after every epoch.

    ``speaker_embeddings`` [n_items, H]: the x-vector of each item's reference audio. The
    arguments are checked here, when called, not at the first ``next()``.
    """
    if not isinstance(options, FinetuneOptions):
        raise TypeError(f"options must be a FinetuneOptions, got {type(options).__name__}")
    if len(items) == 0:
        raise ValueError("no training items")
    if not isinstance(speaker_embeddings, torch.Tensor) or speaker_embeddings.dim() != 2:
        raise TypeError(f"speaker_embeddings must be a [n_items, hidden] tensor, got {speaker_embeddings!r:.60}")
    if speaker_embeddings.shape[0] != len(items):
        raise ValueError(f"{len(items)} items but {speaker_embeddings.shape[0]} speaker embeddings")
    if model.dtype != torch.float32:
        raise ValueError("fine-tune from fp32 weights (load with dtype=torch.float32); use dtype='bf16' for autocast")
    tcfg = model.config.talker
    for i, it in enumerate(items):  # every item checked before the first step
        check_item(i, it, tcfg.num_code_groups, tcfg.code_predictor.vocab_size, tcfg.text_vocab_size)
    return _train(model, items, speaker_embeddings, options, on_step)


def _train(model, items, speaker_embeddings, options, on_step) -> Iterator[tuple[int, torch.Tensor]]:
    torch.manual_seed(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    params = [p for n, p in model.named_parameters() if not n.startswith("speaker_encoder.")]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    speaker_embeddings = speaker_embeddings.detach().to(model.device, torch.float32)
    baked = None
    model.train()
    try:
        for epoch in range(options.epochs):
            batches = _batches(len(items), options.batch_size, gen)
            for step, idx in enumerate(batches):
                batch = collate([items[i] for i in idx], model.config).to(model.device)
                spk = speaker_embeddings[idx]
                if baked is None:
                    baked = spk[0].clone()
                if options.dtype == "bf16":
                    with torch.autocast(model.device.type, dtype=torch.bfloat16):
                        out = training_forward(model, batch, spk, options.recipe, options.gradient_checkpointing)
                else:
                    out = training_forward(model, batch, spk, options.recipe, options.gradient_checkpointing)
                (out.loss / options.grad_accum).backward()
                sync = (step + 1) % options.grad_accum == 0 or step == len(batches) - 1
                if sync:
                    torch.nn.utils.clip_grad_norm_(params, options.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if on_step is not None:
                    on_step(
                        StepInfo(
                            epoch,
                            step,
                            float(out.loss.detach()),
                            float(out.talker_loss.detach()),
                            float(out.code_predictor_loss.detach()),
                            sync,
                        )
                    )
            yield epoch, baked
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()


def custom_voice_config(config, name: str, speaker_id: int):
    talker = dataclasses.replace(config.talker, spk_id={name: speaker_id}, spk_is_dialect={name: False})
    return dataclasses.replace(config, tts_model_type="custom_voice", talker=talker, speaker_encoder=None)


def check_speaker_name(name: str) -> None:
    # Upstream validates speakers case-insensitively but looks them up as given lower-cased in
    # the stored keys: an upper-case name would be accepted and then fail at generation.
    if not name or name != name.lower() or name.strip() != name:
        raise ValueError(f"speaker name {name!r} must be non-empty lower case without surrounding spaces")


def register_speaker(model, name: str, embedding: torch.Tensor, speaker_id: int | None = None):
    """Turn ``model`` (in place) into a custom-voice model with speaker ``name``; returns it."""
    check_speaker_name(name)
    sid = speaker_id_for(model.config) if speaker_id is None else speaker_id
    with torch.no_grad():
        model.talker.codec_embedding.weight[sid] = embedding.to(model.talker.codec_embedding.weight)
    model.config = custom_voice_config(model.config, name, sid)
    model.talker.cfg = model.config.talker
    model.speaker_encoder = None
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def save_custom_voice_checkpoint(
    model,
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str,
    embedding: torch.Tensor,
    save_dtype: torch.dtype | None = None,
) -> Path:
    """Write a standalone custom-voice checkpoint of ``model`` (a Base model being trained, left
    unchanged) with speaker ``name`` registered, through the one durable writer (output_dir.py). Side files (tokenizer, speech tokenizer, generation
    config) are copied from ``source_dir``; ``upstream_config.json`` is rewritten the way
    upstream's script rewrites config.json, so ``convert-ckpt --to upstream`` gives an upstream
    custom-voice checkpoint."""
    from safetensors.torch import save_file

    check_speaker_name(name)
    src, dst = Path(source_dir), Path(out_dir)
    sid = speaker_id_for(model.config)
    config = custom_voice_config(model.config, name, sid)
    state = {
        k: v.detach().to("cpu").clone() for k, v in model.state_dict().items() if not k.startswith("speaker_encoder.")
    }
    state["talker.codec_embedding.weight"][sid] = embedding.detach().to(
        "cpu", state["talker.codec_embedding.weight"].dtype
    )
    if save_dtype is not None:
        state = {k: v.to(save_dtype) for k, v in state.items()}
    with OutputDir(dst, force=True) as out:  # a rerun replaces an epoch's checkpoint, only once complete
        tmp = out.path
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if p.is_file() and rel.as_posix() not in _REWRITTEN and not rel.name.startswith("model-"):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, tmp / rel)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "producer": "q3tts.finetune"})
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        up_cfg_path = src / "upstream_config.json"
        if up_cfg_path.is_file():
            up = json.loads(up_cfg_path.read_text(encoding="utf-8"))
            up["tts_model_type"] = "custom_voice"
            up.setdefault("talker_config", {})["spk_id"] = {name: sid}
            up["talker_config"]["spk_is_dialect"] = {name: False}
            (tmp / "upstream_config.json").write_text(
                json.dumps(up, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        files = {
            p.relative_to(tmp).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != OWNER_FILE
        }
        manifest = {
            "format": "q3tts-standalone",
            "producer": "q3tts finetune",
            "source": str(src.resolve()),
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        out.commit()
    return dst
