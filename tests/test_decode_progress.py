"""decode_codes reports progress over frames on long decodes (issue 31, finding 8): a bar fed
per decoded chunk, on when asked (and by default only on a terminal for long decodes)."""

from __future__ import annotations

import torch


def test_progress_counts_every_frame_once(load_standalone, capsys):
    m = load_standalone("base")
    codes = torch.zeros(650, m.config.talker.num_code_groups, dtype=torch.long)  # three chunks of <= 300
    (wav,), _ = m.decode_codes(codes, progress=True)
    err = capsys.readouterr().err
    assert "decode" in err and "650/650" in err, err
    (quiet,), _ = m.decode_codes(codes, progress=False)
    assert capsys.readouterr().err == "" and torch.equal(torch.as_tensor(wav), torch.as_tensor(quiet))


def test_chunks_report_their_frames(load_standalone):
    codec = load_standalone("base").codec
    seen = []
    codes = torch.zeros(1, codec.cfg.num_quantizers, 650, dtype=torch.long)
    codec.chunked(codes, on_chunk=seen.append)
    assert seen == [300, 300, 50]
