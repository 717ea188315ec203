"""data.clips_per_video (training): N clips per video from one decode of their union, each with
its own augmentation; batches of B videos flatten to B*N clips; an epoch is one pass over the
videos (N times the steps); train.batch_size keeps counting clips per step."""
import os
import random

import numpy as np
import pytest
import torch

import videoattn.data.dataset as dataset_module
from data_helpers import frame_indices, small_cfg
from videoattn.data import build_dataset, build_loader, videos_per_batch
from videoattn.data.dataset import draw_seed
from videoattn.data.decoding import open_video
from videoattn.datasets.synthetic import make_indexed_video
from videoattn.data.transforms import to_clip, to_tchw
from videokit import dataset_for

N = 3


@pytest.fixture(scope="module")
def indexed_root(tmp_path_factory) -> str:
    """Real videos whose frame i shows i as a barcode: 2 classes x 2 videos (a folder per class)."""
    root = tmp_path_factory.mktemp("indexed")
    for name, frames, fps in (("a/v0.mp4", 90, 30), ("a/v1.mp4", 61, 25), ("b/v2.mp4", 75, 30), ("b/v3.mp4", 40, 15)):
        os.makedirs(os.path.dirname(root / "train" / name), exist_ok=True)
        make_indexed_video(str(root / "train" / name), frames, fps)
    return str(root)


def spy_on_reads(monkeypatch) -> list:
    """Record the dataset's opens and ``get_frames`` calls of the real reader (calls go through)."""
    calls, real_open = [], dataset_module.open_video

    def spying_open(path, *args, **kwargs):
        video = real_open(path, *args, **kwargs)
        calls.append(("open", path))
        real_get = video.get_frames

        def get_frames(indices):
            calls.append(("get_frames", [int(i) for i in indices]))
            return real_get(indices)
        video.get_frames = get_frames
        return video
    monkeypatch.setattr(dataset_module, "open_video", spying_open)
    return calls


def test_one_open_and_one_decode_of_the_union_give_n_independent_draws(indexed_root, tmp_path, monkeypatch):
    cfg = small_cfg(indexed_root, str(tmp_path), "data.train_split=train", "data.val_split=",
                    f"data.clips_per_video={N}", "data.sampling_rate=2", "data.random_flip=true")
    ds = build_dataset(cfg.data, "train")
    assert len(ds) == 4 and ds.clips_per_video == N
    calls, unions = spy_on_reads(monkeypatch), []
    for i in range(len(ds)):
        torch.manual_seed(100 + i)
        calls.clear()
        item = ds[i]
        assert [c[0] for c in calls] == ["open", "get_frames"]          # one open, one decode per item
        assert item["clip"].shape == (N, 3, 4, 32, 32) and item["frame_indices"].shape == (N, 4)
        assert item["video_index"] == i and item["label"] == ds.videos[i][1] and item["skipped"] == []
        union = calls[1][1]
        assert union == sorted(set(item["frame_indices"].flatten().tolist()))
        unions.append(len(union))
        torch.manual_seed(100 + i)
        seeds = [draw_seed() for _ in range(N)]
        for k, seed in enumerate(seeds):  # reference: each clip drawn, opened and decoded on its own
            video = open_video(ds.videos[i][0])
            idx = ds.protocol.train_indices(video.num_frames, video.fps, ds.spec, random.Random(seed))
            frames = video.get_frames(idx)
            video.close()
            assert frame_indices(frames) == idx.tolist()                 # the barcodes: the right frames
            ref = to_clip(ds.protocol.train_view(to_tchw(frames), ds.spec, np.random.RandomState(seed)), cfg.data)
            assert item["frame_indices"][k].tolist() == idx.tolist()
            assert torch.equal(item["clip"][k], ref), (i, k)
    assert max(unions) > 4   # clips of one video start at different frames: a real union


def test_each_clip_has_its_own_augmentation_and_batches_flatten_to_clips(synthetic_root, tmp_path):
    # sampling_rate 16: a clip spans 64 frames at 30 fps, longer than every video, so every clip
    # starts at frame 0: clips of one video differ by their scale, crop and flip only.
    over = ("data.sampling_rate=16", "data.random_flip=true", "train.batch_size=6")
    cfg = small_cfg(synthetic_root, str(tmp_path), *over, f"data.clips_per_video={N}")
    ds = dataset_for(cfg, "train")
    torch.manual_seed(0)
    items = [ds[i] for i in range(8)]
    for item in items:
        assert all(torch.equal(item["frame_indices"][0], fi) for fi in item["frame_indices"])
        assert len({c.numpy().tobytes() for c in item["clip"]}) == N       # three different views
    loader = build_loader(ds, cfg.data, videos_per_batch(6, N, 1), cfg.seed)
    assert loader.batch_size == 2
    loader.sampler.set_epoch(0)
    torch.manual_seed(1)
    batch = next(iter(loader))
    assert batch["clip"].shape == (2 * N, 3, 4, 32, 32) and batch["frame_indices"].shape == (2 * N, 4)
    videos = list(loader.batch_sampler)[0]
    assert batch["video_index"].tolist() == [v for v in videos for _ in range(N)]
    assert batch["label"].tolist() == [ds.videos[v][1] for v in videos for _ in range(N)]
    assert batch["valid"].tolist() == [True] * 2 * N and batch["error"] == [""] * 2 * N and batch["skipped"] == []
    torch.manual_seed(1)  # the same draws, item by item: clip b * N + k is clip k of video b
    assert torch.equal(batch["clip"], torch.cat([ds[v]["clip"] for v in videos]))

    one = small_cfg(synthetic_root, str(tmp_path), *over)                 # the option absent
    first = {}
    for name, c in (("absent", one), ("1", small_cfg(synthetic_root, str(tmp_path), *over, "data.clips_per_video=1"))):
        loader = build_loader(dataset_for(c, "train"), c.data, videos_per_batch(6, 1, 1), c.seed)
        loader.sampler.set_epoch(0)
        torch.manual_seed(1)
        first[name] = next(iter(loader))
    assert first["absent"]["clip"].shape == (6, 3, 4, 32, 32) and first["absent"].keys() == first["1"].keys()
    for key, value in first["absent"].items():
        assert torch.equal(value, first["1"][key]) if torch.is_tensor(value) else value == first["1"][key], key
    torch.manual_seed(5)
    single = dataset_for(one, "train")[3]
    torch.manual_seed(5)  # clip 0 of N takes the draw a single clip takes
    assert torch.equal(ds[3]["clip"][0], single["clip"]) and single["clip"].shape == (3, 4, 32, 32)


def test_an_epoch_is_one_pass_over_the_videos_with_n_times_the_steps(synthetic_root, tmp_path):
    lengths = {}
    for n in (1, 2):
        cfg = small_cfg(synthetic_root, str(tmp_path), f"data.clips_per_video={n}", "train.batch_size=4")
        loader = build_loader(dataset_for(cfg, "train"), cfg.data, videos_per_batch(4, n, 1), cfg.seed)
        loader.sampler.set_epoch(0)
        batches = list(loader)
        lengths[n] = len(loader)
        assert len(batches) == len(loader) and all(len(b["label"]) == len(b["clip"]) == 4 for b in batches)
        seen = [v for b in batches for v in b["video_index"].tolist()]
        assert sorted(seen) == sorted(list(range(24)) * n)   # every video once per epoch, with its n clips
    assert lengths == {1: 6, 2: 12}   # 24 videos, 4 clips per step


def test_a_resumed_epoch_skips_the_videos_of_the_batches_done(synthetic_root, tmp_path):
    """The training loop resumes at ``iteration`` with ``skip = iteration * loader.batch_size``:
    loader.batch_size counts videos, as the sampler does."""
    cfg = small_cfg(synthetic_root, str(tmp_path), "data.clips_per_video=2", "train.batch_size=4")
    loader = build_loader(dataset_for(cfg, "train"), cfg.data, videos_per_batch(4, 2, 1), cfg.seed)
    loader.sampler.set_epoch(3)
    full = list(loader.batch_sampler)
    assert loader.batch_size == 2 and len(full) == len(loader) == 12
    loader.sampler.set_epoch(3, skip=5 * loader.batch_size)
    assert list(loader.batch_sampler) == full[5:]


def test_clips_per_video_must_divide_the_clips_per_process():
    assert videos_per_batch(16, 2, 2) == 4 and videos_per_batch(8, 1, 2) == 4 and videos_per_batch(6, 3, 1) == 2
    for batch, n, world in ((6, 2, 2), (8, 3, 1), (4, 8, 1)):
        with pytest.raises(ValueError, match=rf"data.clips_per_video={n} must divide .* train.batch_size={batch} /"
                                             rf" {world} process\(es\) = {batch // world}"):
            videos_per_batch(batch, n, world)
    with pytest.raises(ValueError, match="must be at least|must be >= 1"):
        small_cfg("/nonexistent", "/tmp/unused", "data.clips_per_video=0")
