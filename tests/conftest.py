"""Shared fixtures and the two test tiers.

- The fast tier (``pytest --fast``): everything not marked ``reference``. It needs only
  ``pip install -e .[test]``; with ``--fast`` (or Q3TTS_FAST_TIER=1) an import blocker makes any
  attempt to import the reference stack fail loudly, and the session fails if one got loaded.
- The reference tier (marker ``reference``): tests that drive upstream qwen-tts / transformers.
  Plain ``pytest`` in the reference environment runs both tiers.

The fixtures are tiny upstream-format checkpoints of all three types, written from the tensor
specs recorded in tests/golden/ (the same bytes as writing them from upstream's modules, which a
reference test checks), their conversions, and models loaded once per session.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

# Tests never touch the network: upstream's loaders must resolve everything locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

# torch and the package are imported where they are used (the fixtures below), not here: the
# xdist controller, which runs no test, then never imports torch (seconds of every run's start),
# and neither does a pytest a test starts on planted tests with these hooks (tests/test_tiers.py).

# One thread for every process a test starts (verify-parity, synthesize, serve, a gate cell): each
# worker is one core's worth, and a child on torch's default of one thread per core spins OpenMP
# barriers against the other worker. Measured on 2 cores beside one busy worker: the console
# test's verify-parity took 160 s with two threads and 12 s with one. A value the caller set wins.
# Set before this process imports torch, it is this process's thread count too (see
# _one_torch_thread for a caller's other value).
for _threads_var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads_var, "1")


def _one_torch_thread() -> None:
    """One thread in this process: on the tiny fixtures a second one only adds fork/join cost (and
    on a shared 2-core machine it can make a run 30x slower). The goldens are recorded with one
    thread too. Called once the test modules are imported (they import torch), before any test,
    and where the fixtures first import it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


GOLDEN_DIR = Path(__file__).parent / "golden"
REFERENCE_STACK = ("transformers", "qwen_tts", "torchaudio", "librosa")
FAST_ENV = "Q3TTS_FAST_TIER"
REPORT_ENV = "Q3TTS_TIER_REPORT"  # a path: the fast tier writes what it blocked and loaded there


class ReferenceStackBlocker:
    """A meta-path finder that refuses the reference stack, and remembers every attempt."""

    def __init__(self):
        self.attempts: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFERENCE_STACK:
            self.attempts.append(name)
            raise ImportError(f"{name} is blocked in the fast test tier; mark the test @pytest.mark.reference")
        return None


def _fast(config) -> bool:
    return bool(config.getoption("--fast")) or os.environ.get(FAST_ENV) == "1"


def _loaded_reference_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in REFERENCE_STACK)


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        help="the fast tier: skip tests marked 'reference' and block imports of the reference stack",
    )


_OUTCOMES = {"passed": 0, "failed": 0, "skipped": 0}  # test outcomes, for the tier report


def pytest_configure(config):
    if _fast(config):
        already = _loaded_reference_modules()
        if already:
            raise pytest.UsageError(f"--fast: the reference stack was imported before the tests started: {already}")
        config._q3tts_blocker = ReferenceStackBlocker()
        sys.meta_path.insert(0, config._q3tts_blocker)


# Fixtures that load upstream: a test using them is in the reference tier without a mark to forget.
REFERENCE_FIXTURES = ("load_models", "load_pair")


# The modules whose tests take longest (`pytest --durations`, reports/suite-time.md), longest first.
# They run first: with work stealing the run then ends on short tests, not on one worker finishing a
# long one while the other waits. A stale list costs minutes at worst, never a result.
LONG_MODULES = (
    "test_fast_path.py", "test_engine_parity.py", "test_fast_cache.py", "test_sampling_sharpness.py",
    "test_fast_sharpness.py", "test_synthesize_cli.py", "test_faults.py", "test_tiers.py", "test_gate.py",
    "test_fast_quant.py", "test_verify_console.py", "test_streaming.py", "test_verify_cli.py",
    "test_fast_warmup.py", "test_finetune_interrupt.py", "test_icl_audio_verify.py",
)  # fmt: skip


def _longest_first(items) -> None:
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: module order kept


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what it will
def pytest_collection_modifyitems(config, items):
    _one_torch_thread()
    _longest_first(items)
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in REFERENCE_FIXTURES):
            item.add_marker(pytest.mark.reference)
    reference = [item for item in items if item.get_closest_marker("reference")]
    if not _fast(config):
        if reference and importlib.util.find_spec("qwen_tts") is None:
            raise pytest.UsageError(
                f"{len(reference)} selected tests need the reference environment (qwen-tts), which is not installed: "
                "run the fast tier with `pytest --fast`, or install requirements-reference.txt"
            )
        return
    if reference:
        config.hook.pytest_deselected(items=reference)
        items[:] = [item for item in items if not item.get_closest_marker("reference")]


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.outcome] = _OUTCOMES.get(report.outcome, 0) + 1


def _worker_findings(config) -> dict:
    """What this process's blocker saw: every refused import and every reference module loaded."""
    blocker = config._q3tts_blocker
    return {"attempts": list(blocker.attempts), "loaded": _loaded_reference_modules()}


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: a worker is done, with its findings
def pytest_testnodedown(node, error):
    findings = getattr(node, "workeroutput", {}).get("q3tts_tier")
    if findings is not None:
        node.config._q3tts_worker_findings = [*getattr(node.config, "_q3tts_worker_findings", []), findings]


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if getattr(config, "_q3tts_blocker", None) is None:
        return
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller judges every worker's findings
        config.workeroutput["q3tts_tier"] = _worker_findings(config)
        return
    runs = [_worker_findings(config), *getattr(config, "_q3tts_worker_findings", [])]
    loaded = sorted({m for r in runs for m in r["loaded"]})
    if loaded:
        print(f"\nfast tier: the reference stack was loaded: {loaded}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    report = os.environ.get(REPORT_ENV)
    if report:
        _write_tier_report(Path(report), config._q3tts_blocker, [a for r in runs for a in r["attempts"]], loaded)


def _write_tier_report(path: Path, blocker, attempts: list[str], loaded: list[str]) -> None:
    try:  # the blocker still refuses at the end of the session
        import qwen_tts  # noqa: F401

        blocks = False
    except ImportError as e:
        blocks = "blocked in the fast test tier" in str(e)
    path.write_text(
        json.dumps(
            dict(
                blocker_installed=blocker in sys.meta_path,
                blocks_qwen_tts=blocks,
                blocked_attempts=attempts,
                loaded=loaded,
                **_OUTCOMES,
            )
        )
    )


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def warm_compile_cache() -> Path:
    """An inductor cache kept between test runs (Q3TTS_TEST_COMPILE_CACHE, else under ~/.cache), for
    the tests that compile in a child process: from a warm environment they load the tiny graphs
    instead of compiling them again (about 30 s a process on 2 cores). The graphs depend only on the
    fixtures' shapes, so a stale entry is a miss, never a wrong answer (tests/test_fast_cache.py)."""
    path = Path(os.environ.get("Q3TTS_TEST_COMPILE_CACHE") or Path.home() / ".cache" / "q3tts-tests" / "inductor")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tensor_specs():
    from q3tts.verify.fixtures.writer import load_tensor_specs

    return load_tensor_specs(GOLDEN_DIR / "fixture_tensors.json")


@pytest.fixture(scope="session")
def checkpoints(request, tmp_path_factory, tensor_specs):
    """{model_type: (upstream_dir, standalone_dir)} for every model type. Where upstream is
    installed its own classes write the upstream directories (save_pretrained); the fast tier
    writes them from the recorded specs and files, the same bytes (tests/test_goldens.py)."""
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.fixtures.writer import MODEL_TYPES, SUITE_SEEDS, write_upstream_checkpoint

    _one_torch_thread()  # in case no test module imported torch before (a run of torch-free modules)
    by_upstream = not _fast(request.config) and importlib.util.find_spec("qwen_tts") is not None
    specs = None if by_upstream else tensor_specs
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for mt in MODEL_TYPES:
        up = write_upstream_checkpoint(root / f"upstream-{mt}", mt, seed=SUITE_SEEDS[mt], tensor_specs=specs)
        st = root / f"standalone-{mt}"
        convert_checkpoint(up, st)
        out[mt] = (up, st)
    return out


_standalone: dict = {}


@pytest.fixture(scope="session")
def load_standalone(checkpoints):
    """load_standalone(model_type, dtype) -> standalone Qwen3TTS, loaded once per session."""
    import torch

    from q3tts.standalone import Qwen3TTS

    def load(model_type: str, dtype: torch.dtype = torch.float32):
        key = (model_type, dtype)
        if key not in _standalone:
            _standalone[key] = Qwen3TTS.from_pretrained(checkpoints[model_type][1], dtype=dtype)
        return _standalone[key]

    return load


_loaded: dict = {}


@pytest.fixture(scope="session")
def load_models(checkpoints, load_standalone):
    """load_models(model_type, dtype) -> (upstream Qwen3TTSModel wrapper, standalone Qwen3TTS),
    loaded once per session."""
    from q3tts.verify.cases.forward import load_upstream_wrapper

    def load(model_type: str, dtype):
        key = (model_type, dtype)
        if key not in _loaded:
            up_dir, _ = checkpoints[model_type]
            _loaded[key] = (load_upstream_wrapper(up_dir, dtype), load_standalone(model_type, dtype))
        return _loaded[key]

    return load


@pytest.fixture(scope="session")
def load_pair(load_models):
    """load_pair(model_type, dtype) -> (upstream Qwen3TTSForConditionalGeneration, standalone)."""

    def load(model_type: str, dtype):
        wrapper, standalone = load_models(model_type, dtype)
        return wrapper.model, standalone

    return load
