"""The fast path inside the real decode loop, step by step, with upstream's decisions.

Free-running generation cannot be judged in bf16: one flipped near-tie changes every later frame,
so a sampler or loop bug hides behind legitimate precision noise (measured: the bf16 fast
self-test missed every sampler-only fault with generation unjudged). This check separates the two
sources of difference, in every dtype:

- upstream generates one case in one sampler mode from a seed, and forward hooks record the logits
  of every talker step (codec head) and every code-predictor group (its heads);
- from the same seed, ``generation.generate_codes`` runs the standalone decode loop with a
  ``ReplayEngine``: the prompt prefill, each talker step and code-predictor frame run the compiled fast graphs on the
  loop's own inputs (positions, masks, caches, trailing text), and those logits are compared with
  upstream's at the same step (FAST_STEP_TOLERANCES); the engine then hands the loop upstream's logits,
  so the loop's sampler, penalty, EOS, suppression and parameter handling decide on exactly the
  logits upstream decided on;
- the decisions must equal upstream's codes exactly (any dtype), and every step's logits must be
  within the fast tolerances.

When the loop decides right, its state follows upstream's codes, so the fast graphs are always
measured on upstream's history (teacher forcing through the real loop) and precision never
cascades. A decision bug changes the codes; a bug in what the loop feeds the graphs (positions,
prompt, trailing text) moves the logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch

from q3tts.standalone import sampling
from q3tts.verify.compare import FAST_STEP_TOLERANCES, compare, first_divergence


class _Exhausted(RuntimeError):
    """The loop asked for a step upstream never ran: it did not stop where upstream stopped."""


@contextlib.contextmanager
def upstream_logits(up_model):
    """Record upstream's last-position logits in call order: ``("talker", [B, V])`` for each codec
    head call, ``("cp", [B, V])`` for each code-predictor head call."""
    seq: list[tuple[str, torch.Tensor]] = []
    talker = up_model.talker
    heads = [("talker", talker.codec_head)] + [("cp", h) for h in talker.code_predictor.lm_head]
    handles = [
        m.register_forward_hook(lambda _m, _i, out, kind=kind: seq.append((kind, out[:, -1].detach().clone())))
        for kind, m in heads
    ]
    try:
        yield seq
    finally:
        for h in handles:
            h.remove()


def split_steps(seq, groups: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """(talker logits per step, code-predictor logits per frame [groups - 1 of them])."""
    talker = [t for kind, t in seq if kind == "talker"]
    cp = [t for kind, t in seq if kind == "cp"]
    n = groups - 1
    return talker, [cp[i : i + n] for i in range(0, len(cp) - len(cp) % n, n)]


@dataclass
class Stepwise:
    case: str
    mode: str
    dtype: str
    decisions_identical: bool
    first_divergence: tuple[int, int, int] | str | None
    talker_steps: int
    cp_groups: int
    max_abs: float = 0.0
    max_rel: float = 0.0
    min_cosine: float = 1.0
    over_tolerance: list[str] = field(default_factory=list)  # first few "talker.step3" / "cp.frame2.group5"
    passed: bool = False
    error: str | None = None  # the standalone's loop raised (type: message): failed, not diverged

    def as_dict(self) -> dict:
        return asdict(self)


class ReplayEngine:
    """Stands in for a FastEngine in generation.generate_codes: runs the engine's graphs on the
    loop's inputs, measures their logits against upstream's, returns upstream's to decide on."""

    def __init__(
        self, engine, talker_ref, cp_ref, up_lengths: list[int], dtype: torch.dtype, result: Stepwise, tol=None
    ):
        self.engine, self.talker_ref, self.cp_ref = engine, talker_ref, cp_ref
        self.up_lengths, self.dtype, self.result = up_lengths, dtype, result
        self.tol = tol or FAST_STEP_TOLERANCES[dtype]
        self.n_talker = self.n_frames = 0

    def talker_cache_len(self, needed: int) -> int:
        return self.engine.talker_cache_len(needed)

    def talker_prefill(self, x, positions, mask, cache):
        hidden, logits = self.engine.talker_prefill(x, positions, mask, cache)
        ref = self.talker_ref[0]
        self._measure("talker.prefill", ref, logits[:, -1])
        return hidden, ref[:, None]

    def talker_step(self, x, positions, mask, cache, start):
        hidden, logits = self.engine.talker_step(x, positions, mask, cache, start)
        i = self.n_talker = self.n_talker + 1  # talker_ref[0] is the prefill's
        if i >= len(self.talker_ref):
            raise _Exhausted(f"talker step {i}")
        ref = self.talker_ref[i]
        rows = [r for r, n in enumerate(self.up_lengths) if n >= i]  # rows still running upstream
        self._measure(f"talker.step{i}", ref[rows], logits[rows, -1])
        self.result.talker_steps += 1
        return hidden, ref[:, None]

    def generate_frame(self, past_hidden, e0, cache, params):
        j = self.n_frames
        self.n_frames += 1
        if j >= len(self.cp_ref):
            raise _Exhausted(f"code-predictor frame {j}")
        refs = self.cp_ref[j]
        # Decide every group first, on upstream's logits, in the loop's RNG order (the graphs draw nothing).
        codes = torch.stack([sampling.sample_next_token(r, None, params) for r in refs], dim=1)
        got = self.engine.frame_logits(past_hidden, e0, codes, cache)
        rows = [r for r, n in enumerate(self.up_lengths) if n > j]
        for k, ref in enumerate(refs):
            self._measure(f"cp.frame{j}.group{k + 1}", ref[rows], got[rows, k])
        self.result.cp_groups += len(refs)
        return codes

    def _measure(self, name, ref, got):
        if ref.shape[0] == 0:
            return
        c = compare(name, ref, got, self.dtype, self.tol)
        r = self.result
        r.max_abs, r.max_rel, r.min_cosine = (
            max(r.max_abs, c.max_abs),
            max(r.max_rel, c.max_rel),
            min(r.min_cosine, c.cosine),
        )
        if not c.passed and len(r.over_tolerance) < 4:
            r.over_tolerance.append(name)


def run_stepwise(
    standalone, prompt, params, engine, seq, up_codes, case, mode, dtype_name, dtype, seed, tol=None
) -> Stepwise:
    """The replay run; ``seq`` from ``upstream_logits`` over upstream's seeded generate(), whose
    codes are ``up_codes``; logits judged by ``tol`` (default FAST_STEP_TOLERANCES[dtype]). Called
    through generation's module so that a patched seam is measured."""
    from q3tts.standalone import generation

    talker_ref, cp_ref = split_steps(seq, standalone.config.talker.num_code_groups)
    result = Stepwise(case, mode, dtype_name, False, None, 0, 0)
    replay = ReplayEngine(engine, talker_ref, cp_ref, [int(c.shape[0]) for c in up_codes], dtype, result, tol)
    torch.manual_seed(seed)
    try:
        codes, _ = generation.generate_codes(standalone, prompt, params, engine=replay)
        result.first_divergence = first_divergence(up_codes, codes)
    except _Exhausted as e:
        result.first_divergence = f"the loop ran past upstream's stop ({e})"
    except Exception as e:  # a broken standalone side is a failed case, not a crash (as verify/cases/suite.py)
        result.error = f"{type(e).__name__}: {e}"
        result.first_divergence = f"error: {result.error}"
    result.decisions_identical = result.first_divergence is None
    result.passed = result.decisions_identical and not result.over_tolerance
    return result
