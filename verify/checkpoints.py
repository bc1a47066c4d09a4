"""The checkpoints a verify-parity run compares: the embedded default's tiny fixtures (written by
upstream's classes, converted), or SRC and its conversion."""

from __future__ import annotations

from pathlib import Path


def checkpoint_pairs(src, standalone_dir, frames, work: Path, progress):
    """(name, source, upstream dir, standalone dir) per checkpoint, the frames per case, and how
    the fixtures were written (None for SRC)."""
    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.model import resolve_checkpoint_dir
    from q3tts.verify.fixtures.writer import MODEL_TYPES
    from q3tts.verify.gate.outcome import write_fixture

    pairs = []
    if src is None:
        progress.line("no SRC: building tiny random checkpoints of base, custom_voice and voice_design")
        fixtures = {}
        for i, mt in enumerate(MODEL_TYPES):
            up, fixtures[mt] = write_fixture(work / f"upstream-{mt}", mt, seed=10 + i)
            st = work / f"standalone-{mt}"
            convert_checkpoint(up, st)
            pairs.append((f"tiny-{mt}", "fixture", up, st))
        for note in dict.fromkeys(f["note"] for f in fixtures.values() if f["note"]):
            progress.line(f"{', '.join(mt for mt, f in fixtures.items() if f['note'] == note)}: {note}")
        return pairs, frames or 24, fixtures
    up = resolve_checkpoint_dir(src)
    st = Path(standalone_dir) if standalone_dir else work / "standalone"
    if not standalone_dir:
        progress.line(f"converting {up}")
        convert_checkpoint(up, st)
    pairs.append((Path(str(src)).name, str(src), up, st))
    return pairs, frames or 6, None
