"""Compiled graphs saved whole, so a later process start skips dynamo's trace.

torch.compile's on-disk caches keep inductor's generated code, but every process start still runs
dynamo over the Python of each graph: at 0.6B that trace was 5.9 s of an 8.7 s second start with
one graph per code-predictor step, and 11.5 s of 14.9 s with the code predictor's frame as one
graph (cProfile and dynamo's compile_times, AMD EPYC, 2 threads). torch 2.9's
``torch._dynamo.aot_compile`` captures one full graph with its guards and rewritten bytecode as a
serializable function; loaded in a new process it needs neither the trace nor the Python it was
traced from (measured: the 0.6B bf16+int8 code-predictor frame loaded in 0.7 s against 7.1 s
through torch.compile's warm cache, the same codes and the same logits bit for bit).

``PrecompiledGraph`` wraps one graph module: on the first call with inputs of a new kind it loads
the saved function whose key matches, else compiles one and saves it (atomically). Weights are not
in the saved function: it reads them from the module it is called with, so a saved graph runs the
loading process's own checkpoint, as torch.compile's cached graphs do (tests/test_precompiled.py).

What the key covers, because a loaded function only checks its inputs' shapes, dtypes and strides
(its guards on globals and on module identity cannot be saved and are dropped): torch, Python and
the CPU's vector ISA; the module's structure (classes, plain attributes such as an epsilon or a
config, parameter shapes and dtypes); and the code the trace reads as it is at the time of the
call, i.e. every function, class and constant of the q3tts.standalone modules, so a function
rebound by a planted fault (verify/faults) or an edited source gets its own graph, never a stale one.

Where the API is missing (another torch) or a graph cannot be captured whole, the module falls
back to torch.compile, with a warning, and a saved function that no longer loads is compiled again.

Every code change gives every graph a new key, so old files would pile up (5-11 MB a graph at 0.6B,
reports/precompiled): a load renews its file's time, and each save removes the files no process has
loaded or written for PRUNE_AFTER_DAYS (prune_unused).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pkgutil
import platform
import sys
import tempfile
import time
import types
import warnings
from dataclasses import fields, is_dataclass
from pathlib import Path

import torch
from torch import nn

RUNTIME = "q3tts.standalone"
# Bumped when what a saved file holds changes shape.
FORMAT = 1
# How deep _describe follows containers and dataclasses (configs nest three deep).
_DEPTH = 5
# Saved graphs (and temporary files of interrupted writes) untouched for this long are removed when
# another graph is saved; a file in use is touched at every load, so only stale keys go.
PRUNE_AFTER_DAYS = 30


def prune_unused(directory: Path, now: float | None = None) -> list[Path]:
    """Remove the ``*.aot`` and ``*.aot*.tmp`` files in ``directory`` last modified more than
    PRUNE_AFTER_DAYS before ``now`` (default: the current time); returns the removed paths. A file
    another process removes first, or one that cannot be removed, is skipped: the cache stays usable."""
    now = time.time() if now is None else now
    removed = []
    for path in [*directory.glob("*.aot"), *directory.glob("*.aot*.tmp")]:
        try:
            if now - path.stat().st_mtime > PRUNE_AFTER_DAYS * 86400:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _aot_api():
    """torch's full-graph AOT compile and its serialized function, or None on a torch without them."""
    try:
        from torch._dynamo.aot_compile import AOTCompiledFunction, aot_compile_fullgraph
        from torch._dynamo.hooks import Hooks
    except ImportError:
        return None
    return aot_compile_fullgraph, AOTCompiledFunction, Hooks


def _code_digest(code: types.CodeType, h) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, h)
        else:
            h.update(repr(const).encode())


def _describe(value, h, depth: int = 0) -> None:
    """Fold what tracing could read from ``value`` into h: a function's code, a class's members,
    a plain value's repr; anything else by its type's name only."""
    if isinstance(value, types.FunctionType):
        h.update(f"fn {value.__module__}.{value.__qualname__}".encode())
        _code_digest(value.__code__, h)
        if depth < _DEPTH:  # what a closure or a default argument binds is part of what it computes
            for cell in value.__closure__ or ():
                try:
                    bound = cell.cell_contents
                except ValueError:  # a cell not filled yet
                    bound = None
                _describe(None if bound is value else bound, h, depth + 1)
            _describe(value.__defaults__, h, depth + 1)
    elif callable(value) and hasattr(value, "__wrapped__") and depth < _DEPTH:  # functools.wraps, lru_cache
        h.update(type(value).__qualname__.encode())
        _describe(value.__wrapped__, h, depth + 1)
    elif isinstance(value, type):
        h.update(f"class {value.__module__}.{value.__qualname__}".encode())
        if depth == 0 and value.__module__.startswith(RUNTIME):
            for name, member in sorted(vars(value).items()):
                if name.startswith("__") and not isinstance(member, types.FunctionType):
                    continue  # bookkeeping such as __slotnames__, which pickling adds to a class
                h.update(name.encode())
                _describe(member, h, depth + 1)
    elif isinstance(value, (staticmethod, classmethod)):
        _describe(value.__func__, h, depth)
    elif isinstance(value, (set, frozenset)):  # repr order follows string hashing, which differs per process
        h.update(repr(sorted(repr(v) for v in value)).encode())
    elif is_dataclass(value) and depth < _DEPTH:
        # field by field: a field may hold a function, whose repr has an address
        h.update(type(value).__qualname__.encode())
        for f in fields(value):
            h.update(f.name.encode())
            _describe(getattr(value, f.name), h, depth + 1)
    elif isinstance(value, dict) and depth < _DEPTH:
        for k, v in sorted(value.items(), key=lambda kv: repr(kv[0])):
            h.update(repr(k).encode())
            _describe(v, h, depth + 1)
    elif isinstance(value, (list, tuple)) and depth < _DEPTH:
        h.update(type(value).__name__.encode())
        for v in value:
            _describe(v, h, depth + 1)
    elif isinstance(value, (int, float, str, bool, bytes, type(None), torch.dtype, torch.device)):
        h.update(repr(value).encode())
    else:
        h.update(type(value).__qualname__.encode())


def runtime_digest() -> str:
    """The q3tts.standalone modules' functions, classes and constants as they are now. Every module
    of the package is imported first (about 30 ms), so the digest does not depend on which of them
    a process happened to import (one imported during a trace moved the key of the graph it saved)."""
    package = importlib.import_module(RUNTIME)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{RUNTIME}.{info.name}")
    h = hashlib.sha256()
    for name in sorted(sys.modules):
        mod = sys.modules[name]
        if mod is None or not (name == RUNTIME or name.startswith(RUNTIME + ".")):
            continue
        h.update(name.encode())
        for attr, value in sorted(vars(mod).items()):
            if not attr.startswith("__"):
                h.update(attr.encode())
                _describe(value, h)
    return h.hexdigest()


def module_digest(module: nn.Module) -> str:
    """The module tree's classes, plain attributes (dataclass configs included) and the shapes
    and dtypes of its parameters and buffers: what the trace bakes into the graph."""
    h = hashlib.sha256()
    for name, sub in module.named_modules():
        h.update(f"{name}:{type(sub).__module__}.{type(sub).__qualname__}".encode())
        for attr, value in sorted(vars(sub).items()):
            if not attr.startswith("_") and attr != "training":
                h.update(attr.encode())
                _describe(value, h)
        for pname, t in list(sub._parameters.items()) + list(sub._buffers.items()):
            h.update(f"{pname}:{None if t is None else (tuple(t.shape), t.dtype, t.stride())}".encode())
    return h.hexdigest()


def input_spec(args) -> str:
    """The inputs as the guards see them: tensors by dtype, device, shape (dimensions marked
    dynamic as '*'), strides, grad and whether they are inference tensors (their dispatch keys
    differ: one sampling-knob tensor made inside inference mode and one outside shared a key and
    made each other's graph compile again); other values by repr."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            dyn = getattr(a, "_dynamo_dynamic_indices", set())
            shape = tuple("*" if i in dyn else s for i, s in enumerate(a.shape))
            stride = tuple("*" if dyn else s for s in a.stride())
            parts.append(f"T({a.dtype},{a.device},{shape},{stride},{a.requires_grad},{a.is_inference()})")
        else:
            parts.append(repr(a))
    return ";".join(parts)


def _vec_isa() -> str:
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        return str(pick_vec_isa())
    except Exception:  # an ISA probe that fails must not stop the engine: torch.compile will see it too
        return "unknown"


def _accepts(fn, module, args) -> bool:
    """fn's guards on these inputs, with the inputs' dynamic-dimension marks (mark_dynamic) hidden.
    A deserialized function (torch 2.9.1) guards that its inputs carry no marks at all, however
    they were marked when it was traced; which dimensions are dynamic is part of the file's key
    (input_spec), so the marks have nothing left to tell it."""
    marks = [
        (a, a.__dict__.pop("_dynamo_dynamic_indices"))
        for a in args
        if "_dynamo_dynamic_indices" in getattr(a, "__dict__", {})
    ]
    try:
        return fn.guard_check(module, *args)
    finally:
        for a, m in marks:
            a._dynamo_dynamic_indices = m


@contextlib.contextmanager
def _constants_copied_outside_fake_mode():
    """torch 2.9.1 deep-copies each compiled graph (its constants included) into the precompile
    context; for the int4 graphs that copy ran while a fake-tensor mode was still active, the copy of
    a real constant failed ("set the storage of a tensor on device meta") and nothing could be
    saved. The copy is made with fake modes set aside."""
    from torch._dynamo.precompile_context import PrecompileContext
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    record = PrecompileContext.__dict__["record_artifact"]

    def outside_fake_mode(cls, *args, **kwargs):
        with unset_fake_temporarily():
            return record.__func__(cls, *args, **kwargs)

    PrecompileContext.record_artifact = classmethod(outside_fake_mode)
    try:
        yield
    finally:
        PrecompileContext.record_artifact = record


class _Inductor(torch._TorchCompileInductorWrapper):
    """torch.compile's inductor backend, handed dynamo's fake inputs as torch.compile does.
    aot_compile_fullgraph hands it the real tensors: AOTAutograd then fakes them anew with every
    dimension symbolic, and specialised the window marked dynamic to the length it was traced at
    without a guard saying so (the next window length failed an assert inside the graph)."""

    def __call__(self, gm, example_inputs):
        from torch._guards import TracingContext
        from torch._subclasses.fake_tensor import FakeTensor

        fakes = [node.meta["example_value"] for node in gm.graph.find_nodes(op="placeholder")]
        modes = {id(t.fake_mode): t.fake_mode for t in fakes if isinstance(t, FakeTensor)}
        if len(modes) == 1:
            TracingContext.get().fake_mode = next(iter(modes.values()))
        return super().__call__(gm, fakes)


class PrecompiledGraph:
    """``module`` compiled once per kind of input and saved under ``cache_dir``/precompiled (see
    the module docstring). Called like the module."""

    def __init__(self, module: nn.Module, options: dict, cache_dir: Path):
        self.module = module
        self.options = dict(options)
        self.dir = Path(cache_dir) / "precompiled"
        self._loaded: list = []  # AOTCompiledFunction, tried in order by their guards
        self._fallback = None
        self.loads = self.compiles = 0  # for tests and reports: how each kind of input was served

    def __call__(self, *args):
        for fn in self._loaded:
            if _accepts(fn, self.module, args):
                return fn.fn(self.module, *args)
        if self._fallback is not None:
            return self._fallback(*args)
        api = _aot_api()
        if api is None:
            return self._fall_back("this torch has no torch._dynamo.aot_compile", args)
        path = self.dir / f"{type(self.module).__name__}-{self.key(args)}.aot"
        fn = self._load(api, args, path) or self._compile(api, args, path)
        if fn is None:
            return self._fall_back("the graph could not be captured whole", args)
        self._loaded.append(fn)
        return fn.fn(self.module, *args)

    def key(self, args) -> str:
        h = hashlib.sha256()
        for part in (
            f"format {FORMAT}",
            torch.__version__,
            sys.version,
            platform.machine(),
            _vec_isa(),
            f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            module_digest(self.module),
            runtime_digest(),
            repr(sorted(self.options.items())),
            input_spec(args),
            f"grad {torch.is_grad_enabled()} inference {torch.is_inference_mode_enabled()}",
        ):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:32]

    def _load(self, api, args, path: Path):
        if not path.is_file():
            return None
        try:
            fn = api[1].deserialize(path.read_bytes())
            if _accepts(fn, self.module, args):
                self.loads += 1
                with contextlib.suppress(OSError):  # in use: kept by prune_unused (a read-only cache still loads)
                    os.utime(path)
                return fn
            from torch._dynamo.aot_compile import bind_locals

            why = fn._artifacts.guard_manager.check_verbose(bind_locals(fn._artifacts.signature, self.module, *args))
            warnings.warn(f"{path} does not accept these inputs ({why}); compiling again", stacklevel=3)
        except Exception as e:  # a torn or foreign file: the graph can always be compiled again
            warnings.warn(f"{path} did not load ({type(e).__name__}: {e}); compiling again", stacklevel=3)
        return None

    def _compile(self, api, args, path: Path):
        aot_compile_fullgraph, serialized, hooks = api
        backend = _Inductor("default", self.options, False)
        try:
            # As torch.compile(dynamic=False): dimensions are static unless marked dynamic. Without it
            # dynamo's automatic dynamic shapes (and its profile of earlier processes, kept in the
            # cache directory) made other dimensions symbolic and specialised the marked window.
            with (
                torch._dynamo.config.patch(automatic_dynamic_shapes=False, assume_static_by_default=True),
                _constants_copied_outside_fake_mode(),
            ):
                fn = aot_compile_fullgraph(self.module.forward, (args, {}), hooks(), backend)
            data = serialized.serialize(fn)
        except Exception as e:  # graph breaks, unsupported guards: torch.compile still works
            warnings.warn(f"{type(self.module).__name__}: {type(e).__name__}: {e}", stacklevel=3)
            return None
        self.compiles += 1
        self._save(path, data)
        prune_unused(self.dir)
        return fn

    @staticmethod
    def _save(path: Path, data: bytes) -> None:
        """Written to a temporary file and renamed: a reader never sees half a function."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _fall_back(self, why: str, args):
        warnings.warn(f"{type(self.module).__name__}: {why}; using torch.compile", stacklevel=3)
        self._fallback = torch.compile(self.module, dynamic=False, options=self.options)
        return self._fallback(*args)
