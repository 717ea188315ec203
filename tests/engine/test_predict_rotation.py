"""tools/predict.py --render on a phone video (issue 19, finding 7): the display rotation is applied,
so the rendered video is upright, as players and decord (the reader the model sees) show it."""

import os

import numpy as np
import pytest
from evalkit import check, run
from videokit import rotated_video


@pytest.mark.slow
def test_render_of_a_rotated_video_is_upright(setup):
    import av
    import decord

    folder = setup["tmp"] / "phone"
    folder.mkdir()
    src = str(folder / "clip.mp4")
    rotated_video(src, n=30)
    shown = decord.VideoReader(src)[0].asnumpy()
    assert shown.shape == (160, 96, 3)  # stored 160x96 with a -90 degree display matrix
    out = str(setup["tmp"] / "phone_out")
    check(
        run(
            [
                "tools/predict.py",
                "--config",
                setup["cfg"],
                "--checkpoint",
                setup["ckpt"],
                "--input",
                str(folder),
                "--output",
                out,
                "--render",
            ]
        )
    )
    rendered = os.path.join(out, "clip.mp4")
    got = decord.VideoReader(rendered)[0].asnumpy()
    assert got.shape == shown.shape
    bottom = slice(shown.shape[0] // 2, None)  # the labels are drawn at the top left; the white block is bottom right
    assert np.abs(got[bottom].astype(int) - shown[bottom]).mean() < 4
    assert got[bottom].mean() > 20  # the block is there
    with av.open(rendered) as c:
        assert next(c.decode(video=0)).rotation == 0
