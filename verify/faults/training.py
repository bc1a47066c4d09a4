"""Training faults: deliberate bugs planted in the standalone training forward, to prove the
training parity (upstream recipe vs upstream's step) and the consistency check (aligned recipe vs
the decode loop) catch them.

Each fault is a context manager factory (no argument: it patches ``q3tts.standalone.training``)
that restores everything on exit. ``parity_cases`` are the comparisons of the upstream-recipe
parity that must fail; the aligned consistency check must fail as a whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator
from unittest import mock

import torch

import q3tts.standalone.training as training


@dataclass(frozen=True)
class TrainingFault:
    name: str
    description: str
    parity_cases: tuple[str, ...]  # comparisons (by case name) that must fail in the upstream-recipe parity
    inject: Callable[[], ContextManager]


@contextlib.contextmanager
def _shifted_label() -> Iterator[None]:
    original = training.talker_labels

    def shifted(labels, recipe):
        out = original(labels, recipe)
        pad = torch.full_like(out[:, :1], training.IGNORE_INDEX)
        return torch.cat([out[:, 1:], pad], dim=1)  # every group-0 label one position early

    with mock.patch.object(training, "talker_labels", shifted):
        yield


@contextlib.contextmanager
def _wrong_code_predictor_hidden() -> Iterator[None]:
    original = training.code_predictor_hidden

    def swapped(hidden, codec_mask, recipe):
        other = "previous" if recipe.code_predictor_hidden == "leak" else "leak"
        return original(hidden, codec_mask, dataclasses.replace(recipe, code_predictor_hidden=other))

    with mock.patch.object(training, "code_predictor_hidden", swapped):
        yield


@contextlib.contextmanager
def _wrong_loss_weight() -> Iterator[None]:
    # 1.0: the weight of sft_12hz.py before 680d4e9.
    edited = {k: dataclasses.replace(r, code_predictor_weight=1.0) for k, r in training.RECIPES.items()}
    with mock.patch.dict(training.RECIPES, edited):
        yield


@contextlib.contextmanager
def _speaker_wrong_slot() -> Iterator[None]:
    with mock.patch.object(training, "SPEAKER_SLOT", training.SPEAKER_SLOT + 1):  # onto the codec_pad position
        yield


TRAINING_FAULTS: tuple[TrainingFault, ...] = (
    TrainingFault(
        "train_shifted_label",
        "group-0 labels shifted one position early",
        ("train.talker_loss", "train.loss"),
        _shifted_label,
    ),
    TrainingFault(
        "train_wrong_cp_hidden",
        "the code predictor gets the other talker hidden (h[p_k] vs h[p_k - 1])",
        ("train.code_predictor_logits", "train.code_predictor_loss"),
        _wrong_code_predictor_hidden,
    ),
    TrainingFault(
        "train_wrong_loss_weight",
        "code-predictor loss weighted 1.0 instead of 0.3",
        ("train.loss",),
        _wrong_loss_weight,
    ),
    TrainingFault(
        "train_speaker_wrong_slot",
        "speaker embedding written at position 7 instead of 6",
        ("train.talker_logits", "train.talker_loss"),
        _speaker_wrong_slot,
    ),
)
