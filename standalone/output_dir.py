"""The one durable output writer: a directory that appears complete or not at all.

Used by convert-ckpt, the fine-tuning checkpoints and the direct-load cache. Guarantees:

- Atomic: everything is written into ``.NAME.partial-XXXX`` beside the target and renamed into
  place only when complete; the rename never replaces a directory that appeared meanwhile
  (a concurrent writer) unless ``force`` was asked for.
- Durable: every file is fsynced before the rename and the parent directory after it, so a crash
  after success never leaves truncated files.
- Permissions follow the umask, like any directory the user creates (mkdtemp alone gives 0700).
- Signals: SIGTERM and SIGHUP are turned into ``Interrupted`` while writing (as SIGINT is into
  KeyboardInterrupt), so the partial directory is removed; CLIs exit with 128 + the signal.
- Litter: the partial directory records its owner (pid, host, start time) before anything else
  and keeps the record until it is renamed into place, so a kill at any instant leaves a partial
  with its owner record (or nothing); a later run into the same target removes partials whose
  owner is gone (and any with content but no record), never those of a live process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

OWNER_FILE = ".q3tts-partial-owner.json"


class OutputError(OSError):
    """The output directory cannot be written or put in place; the message names the path."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived while an output directory was being written."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _partial_owner_gone(partial: Path) -> bool:
    """True when the partial directory's owner is known to be gone: same host, pid not running
    (or running but started after the partial was, i.e. a reused pid). Unknown owners are kept."""
    try:
        owner = json.loads((partial / OWNER_FILE).read_text(encoding="utf-8"))
        pid, host, started = int(owner["pid"]), str(owner["host"]), float(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return _ownerless_gone(partial)
    if host != socket.gethostname():
        return False
    if not _pid_alive(pid):
        return True
    return _process_start_time(pid) > started + 1.0


def _ownerless_gone(partial: Path) -> bool:
    """A partial directory without a readable owner record. Empty, it may be a writer between
    mkdtemp and writing its record: only an hour-old one is abandoned. With content it is never a
    live writer's (the record is written first and kept until the rename): a run killed while
    removing it, or one of a version that dropped the record before committing."""
    try:
        if any(partial.iterdir()):
            return True
        return time.time() - partial.stat().st_mtime > 3600
    except OSError:
        return False


def _process_start_time(pid: int) -> float:
    """Wall-clock start of ``pid`` from /proc (0.0 when unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def remove_stale_partials(dst: Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """Remove ``.DST.partial-*`` directories beside ``dst`` whose writer is gone."""
    removed = []
    if not dst.parent.is_dir():
        return removed
    for p in sorted(dst.parent.glob(f".{dst.name}.partial-*")):
        if p.is_dir() and _partial_owner_gone(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            if say is not None:
                say(f"removed {p}, left behind by an interrupted run")
    return removed


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename that fails with FileExistsError if ``dst`` exists, atomically where the kernel
    offers renameat2(RENAME_NOREPLACE), else with a check just before the rename."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST or err == errno.ENOTEMPTY:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


@contextlib.contextmanager
def signals_raise_interrupted() -> Iterator[None]:
    """SIGTERM/SIGHUP -> Interrupted for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class OutputDir:
    """``with OutputDir(dst, force) as out: write into out.path; out.commit()``.

    Leaving the block without ``commit()`` (an error, a signal) removes the partial directory and
    leaves ``dst`` untouched.
    """

    def __init__(self, dst: str | os.PathLike, *, force: bool = False, say: Callable[[str], None] | None = None):
        self.dst = Path(dst)
        self.force = force
        self.say = say
        self.path: Path | None = None
        self._signals = None

    def __enter__(self) -> OutputDir:
        remove_stale_partials(self.dst, self.say)
        self._signals = signals_raise_interrupted()
        self._signals.__enter__()
        try:
            self.dst.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.partial-", dir=self.dst.parent))
            os.chmod(self.path, 0o777 & ~current_umask())
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            (self.path / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")
        except OSError as e:
            self._signals.__exit__(None, None, None)
            raise OutputError(e.errno, f"{self.dst}: cannot write there ({e.strerror or e})") from e
        return self

    def commit(self) -> None:
        """Make ``dst`` the finished directory: fsync, rename (no clobbering unless forced),
        fsync the parent. The owner record stays in the partial directory until the rename (a
        kill before it leaves a partial a later run can attribute) and is removed from ``dst``
        right after it."""
        _fsync_tree(self.path)
        old = None
        if self.force and self.dst.exists():
            old = self.dst.with_name(f".{self.dst.name}.old-{os.getpid()}")
            os.replace(self.dst, old)
        try:
            rename_no_replace(self.path, self.dst)
        except FileExistsError:
            if old is not None:
                os.replace(old, self.dst)
            raise OutputError(
                errno.EEXIST,
                f"{self.dst} appeared while this run was writing (another writer?); "
                "left it as it is (pass --force to replace it)",
            ) from None
        except BaseException:
            if old is not None:
                os.replace(old, self.dst)
            raise
        self.path = None
        (self.dst / OWNER_FILE).unlink(missing_ok=True)  # not fsynced: a record that comes back is ignored
        _fsync_dir(self.dst.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()

    def __exit__(self, *exc) -> None:
        try:
            if self.path is not None:
                shutil.rmtree(self.path, ignore_errors=True)
                self.path = None
        finally:
            self._signals.__exit__(None, None, None)
