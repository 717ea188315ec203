"""PySlowFast's default PyAV clip decoder as it behaves: the baseline of ``tools/benchmark.py data``.

Kept with the benchmarks (and the test that checks it frame-exact against decord), not in the
library: nothing in ``videoattn`` decodes this way.
"""

from __future__ import annotations

import numpy as np


def pyslowfast_pyav_clip(path: str, idx: np.ndarray) -> np.ndarray:
    """One clip the way PySlowFast's default decoder reads it (``DATA.DECODING_BACKEND: pyav``).

    Written from its documented behaviour: PyAV's default threading; seek 1,024 pts before the
    clip start (keyframe, backward); decode sequentially, keeping every frame whose pts lies in
    the clip's span plus the first one past it; convert *every* kept frame to RGB and stack them;
    then pick the sampled frames. A stream without a duration is decoded whole. -> uint8 (T, H, W, 3)
    """
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        first, last = int(idx[0]), int(idx[-1])
        if stream.duration and stream.frames:
            pts_per_frame = stream.duration / stream.frames
            start_pts, end_pts = int(first * pts_per_frame), int(last * pts_per_frame)
        else:  # no duration in the header: PySlowFast decodes the whole video
            start_pts, end_pts, first = 0, float("inf"), 0
        container.seek(max(start_pts - 1024, 0), any_frame=False, backward=True, stream=stream)
        kept = {}
        for frame in container.decode(stream):
            if frame.pts < start_pts:
                continue
            kept[frame.pts] = frame
            if frame.pts > end_pts:
                break
        rgb = np.stack([kept[pts].to_rgb().to_ndarray() for pts in sorted(kept)])
    return rgb[np.clip(idx - first, 0, len(rgb) - 1)]
