"""Every decoder on every file kind, against a sequential PyAV decode of every frame: the clips our
protocols draw (8 x 8 and 32 x 2, random and test views) must come back as the reference frames,
bit for bit, with the frame index their barcode carries (tools/benchmarks/decoders.py; the table of
record is in docs/benchmarks.md, decoders). decord2 runs in a child process from its side folder
(``make venv`` installs it there); without it its test is skipped, saying why."""

import os
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")
sys.path.insert(0, TOOLS)

from benchmarks import decoders  # noqa: E402

# Verdicts: equal = bit-equal to the reference by count (the i-th frame shown); "time" = the frame
# on screen at i / fps (a variable frame rate; the count differs); "pixels" = right frames, not
# bit-equal (another IDCT); "wrong" = frames with a wrong index (a wrong seek or frame numbering).
ALL_EQUAL = {kind: "equal" for kind in decoders.KIND_NAMES}
EXPECTED = {
    "pyav": dict(ALL_EQUAL, **{"H.264 VFR": "time"}),
    # decord 0.6 (FFmpeg 4.1): another MPEG-4 IDCT (max diff 2), and AVI B-frames numbered one off
    "decord": dict(ALL_EQUAL, **{"MPEG-4 part 2": "pixels", "MPEG-4 part 2 B-frames": "wrong"}),
    "decord2": dict(ALL_EQUAL, **{"MPEG-4 part 2 B-frames": "wrong"}),
}


def verdict(row: decoders.Exactness) -> str:
    assert not row.error, row.verdict()
    if row.equal == row.frames:
        return "equal"
    if row.equal_by_time == row.frames:
        return "time"
    return "wrong" if row.wrong_index else "pixels"


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    return decoders.make_kinds(str(tmp_path_factory.mktemp("kinds")), frames=96)


def table(mode: str, kinds) -> dict:
    rows = decoders.exactness_rows(decoders.MODES[mode], kinds, per_recipe=1, views=3)
    assert all(r.clips == 16 and r.frames == 8 * 8 + 8 * 32 for r in rows), rows  # 8 clips of 8x8, 8 of 32x2
    return {r.kind: verdict(r) for r in rows}


@pytest.mark.parametrize("mode", ["pyav", "decord"])
def test_decoder_exactness(kinds, mode):
    assert table(mode, kinds) == EXPECTED[mode]


def test_decord2_exactness(kinds):
    missing = decoders.decord2_missing()
    if missing:
        pytest.skip(missing)
    assert table("decord2", kinds) == EXPECTED["decord2"]


def test_a_wrong_seek_is_caught(kinds, monkeypatch):
    """Fault injection: the PyAV reader seeks one second past where it should (to the keyframe after
    the clip start); the comparison must report frames with a wrong index."""
    from videoattn.data.pyav_reader import PyAVReader

    real = PyAVReader._packets
    monkeypatch.setattr(PyAVReader, "_packets", lambda self, pts: real(self, pts + int(1 / self._stream.time_base)))
    h264 = {"H.264 B-frames": kinds["H.264 B-frames"]}
    (row,) = decoders.exactness_rows(decoders.MODES["pyav"], h264, per_recipe=1, views=3)
    assert row.wrong_index > 0 and verdict(row) == "wrong", row.verdict()
