"""The window stream's one consumer (:func:`videoattn.data.windows.per_video`): chunks of videos
interleaved as DataLoader workers send them are grouped per video in order, a video's error drops
its earlier chunks, and a chunk pinned by a DataLoader keeps its fields."""
import torch

from videoattn.data.windows import VideoOutputs, Window, WindowChunk, WindowDone, WindowError, per_video


def _window(n: int) -> Window:
    return Window(fps=30.0, num_frames=32 * n, window_s=1.0, stride_s=1.0, starts=[float(i) for i in range(n)],
                  indices=[[0]] * n, repeated=[0] * n)


def _chunk(k: int, c: int, w: int) -> WindowChunk:
    return WindowChunk(k, c, torch.full((w, 1), float(10 * k + c)), w)


def test_per_video_groups_interleaved_chunks_and_drops_a_failed_videos_chunks():
    items = [_chunk(0, 0, 2), _chunk(1, 0, 2), _chunk(0, 1, 1), _chunk(1, 1, 2), WindowDone(0, _window(3), 96),
             WindowError(1, "DecodeError: broken"), _chunk(2, 0, 1), WindowDone(2, _window(1), 40)]
    ran = []
    got = list(per_video(items, lambda c: ran.append((c.k, c.chunk)) or c.clips[:, 0].tolist()))
    assert ran == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0)]  # every chunk runs once, as it arrives
    assert [type(g) for g in got] == [VideoOutputs, WindowError, VideoOutputs]
    assert got[0].k == 0 and got[0].outputs == [[0.0, 0.0], [1.0]] and got[0].declared_frames == 96
    assert got[1] == WindowError(1, "DecodeError: broken")
    assert got[2].k == 2 and got[2].outputs == [[20.0]] and got[2].window.starts == [0.0]
    assert list(per_video([], lambda c: 1 / 0)) == []


def test_a_pinned_chunk_keeps_its_fields():
    if not torch.cuda.is_available():  # pin_memory needs an accelerator; the copy is what is tested here
        chunk = _chunk(3, 2, 4)
        chunk.clips.pin_memory = lambda: chunk.clips.clone()  # type: ignore[method-assign]
    else:
        chunk = _chunk(3, 2, 4)
    pinned = chunk.pin_memory()
    assert (pinned.k, pinned.chunk, pinned.num_windows) == (3, 2, 4) and torch.equal(pinned.clips, chunk.clips)
