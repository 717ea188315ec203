"""Dataset items, transforms against torchvision references, multi-view test items, the broken-file
policy through real DataLoader workers, determinism, samplers, distributed sharding."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchvision import tv_tensors
from torchvision.transforms import v2

from data_helpers import copy_root, make_broken, small_cfg
from videoattn.data import BrokenVideosError
from videokit import dataset_for, loader_for
from videoattn.data.annotations import clear_index_cache
from videoattn.utils.distributed import per_process_batch
from videoattn.data.samplers import ShardSampler
from videoattn.data.transforms import test_views, train_clip, val_clip

KEYS = {"clip", "label", "video_index", "view_index", "valid", "error"}


def test_item_and_batch_format(synthetic_root, tmp_path):
    cfg = small_cfg(synthetic_root, str(tmp_path))
    for split in ("train", "val"):
        ds = dataset_for(cfg, split)
        assert ds.num_views == 1 and len(ds) == len(ds.videos) and len(ds.classes) == 8
        item = ds[3]
        assert KEYS <= set(item) and item["clip"].dtype == torch.float32
        assert tuple(item["clip"].shape) == (3, 4, 32, 32)
        assert item["label"] == ds.videos[3][1] and item["video_index"] == 3 and item["valid"] and item["error"] == ""
        batch = next(iter(loader_for(cfg, split, ds)))
        assert tuple(batch["clip"].shape) == (4, 3, 4, 32, 32) and batch["skipped"] == []
        assert batch["label"].dtype == torch.int64 and batch["valid"].dtype == torch.bool


def _video(h=48, w=80, t=4, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8))


def _reference(size, mean, std):
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])


@pytest.mark.parametrize("h, w", [(48, 80), (80, 48)])
def test_val_and_test_crops_match_torchvision(tmp_path, h, w):
    cfg = small_cfg(str(tmp_path), str(tmp_path), "data.mean=[0.4,0.5,0.6]", "data.std=[0.2,0.25,0.3]")
    frames = _video(h, w)
    video = tv_tensors.Video(frames.permute(0, 3, 1, 2))
    ref = _reference(32, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(video).permute(1, 0, 2, 3)
    torch.testing.assert_close(val_clip(frames, cfg.data), ref)
    views = test_views(frames, cfg.data, 3)
    resized = v2.ToDtype(torch.float32, scale=True)(v2.Resize(32, antialias=True)(video))
    resized = v2.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(resized).permute(1, 0, 2, 3)
    long = resized.shape[-1] if w > h else resized.shape[-2]
    firsts = [resized[..., :32, :32], None, resized[..., -32:, -32:]]  # left/top, centre, right/bottom
    torch.testing.assert_close(views[1], ref)
    torch.testing.assert_close(views[0], firsts[0])
    torch.testing.assert_close(views[2], firsts[2])
    assert long > 32


def _smooth_video(h, w, t=4):
    """Low-frequency frames: resampling differences at a crop's edge stay small, positions still differ."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([128 + 100 * np.sin(x / 7 + k), 128 + 100 * np.cos(y / 5 - k), 128 + 60 * np.sin((x + y) / 9)], -1)
              for k in range(t)]
    return torch.from_numpy(np.stack(frames).round().astype(np.uint8))


@pytest.mark.parametrize("h, w, scale", [(48, 80, 40), (80, 48, 36), (120, 200, 40)])
def test_train_transform_is_a_window_of_the_torchvision_resize(tmp_path, h, w, scale):
    """train_clip cuts the window from the source and resizes only it; it must show the same picture
    as torchvision's resize-then-crop of the window drawn (up to edge rounding), at that position."""
    frames = _smooth_video(h, w)
    resized = v2.Normalize([0.45] * 3, [0.225] * 3)(v2.ToDtype(torch.float32, scale=True)(
        v2.Resize(scale, antialias=True)(tv_tensors.Video(frames.permute(0, 3, 1, 2))))).permute(1, 0, 2, 3)
    windows = [(y, x) for y in range(resized.shape[-2] - 31) for x in range(resized.shape[-1] - 31)]

    def best_window(clip):
        errors = [(clip - resized[..., y:y + 32, x:x + 32]).abs().mean().item() for y, x in windows]
        k = int(np.argmin(errors))
        return windows[k], errors[k]

    for flip in (False, True):
        cfg = small_cfg(str(tmp_path), str(tmp_path), f"data.train_jitter_scales=[{scale},{scale}]",
                        f"data.random_flip={str(flip).lower()}")
        mirrored = []
        for seed in range(8):
            g = torch.Generator().manual_seed(seed)
            clip = train_clip(frames, cfg.data, g)
            assert tuple(clip.shape) == (3, 4, 32, 32) and clip.dtype == torch.float32
            g = torch.Generator().manual_seed(seed)   # the same draws: scale, top, left (, flip)
            torch.randint(scale, scale + 1, (1,), generator=g)
            top = int(torch.randint(0, resized.shape[-2] - 31, (1,), generator=g))
            left = int(torch.randint(0, resized.shape[-1] - 31, (1,), generator=g))
            flipped = flip and float(torch.rand(1, generator=g)) < 0.5
            mirrored.append(flipped)
            (y, x), error = best_window(clip.flip(-1) if flipped else clip)
            assert abs(y - top) <= 1 and abs(x - left) <= 1, (seed, (y, x), (top, left))
            assert error < 0.05   # normalised units: about 3 grey levels of 255
        assert not flip or (any(mirrored) and not all(mirrored))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_normalize_on_device_gives_the_same_model_input(synthetic_root, tmp_path, split):
    """data.normalize_on_device: workers send uint8 clips (4x smaller); DeviceNormalizer normalises
    them into what the float path sends, for every split (same seeds, real workers)."""
    from videoattn.data.transforms import DeviceNormalizer

    batches = {}
    for on in (False, True):
        cfg = small_cfg(synthetic_root, str(tmp_path), "data.num_workers=1", "test.num_spatial_crops=3",
                        f"data.normalize_on_device={str(on).lower()}")
        loader = loader_for(cfg, split)
        loader.sampler.set_epoch(0) if split == "train" else None
        batch = next(iter(loader))
        assert batch["clip"].dtype == (torch.uint8 if on else torch.float32)
        batches[on] = DeviceNormalizer(cfg.data.mean, cfg.data.std)(batch["clip"], torch.device("cpu"))
    assert batches[True].dtype == torch.float32
    torch.testing.assert_close(batches[True], batches[False], atol=1e-5, rtol=1e-5)


def test_pyav_backend_gives_the_same_clips(synthetic_root, tmp_path):
    """data.decoding_backend=pyav reads the frames decord reads (val: deterministic centre clips)."""
    clips = {}
    for backend in ("decord", "pyav"):
        cfg = small_cfg(synthetic_root, str(tmp_path), f"data.decoding_backend={backend}")
        ds = dataset_for(cfg, "val")
        clips[backend] = torch.stack([ds[i]["clip"] for i in range(len(ds))])
    torch.testing.assert_close(clips["pyav"], clips["decord"])
    with pytest.raises(ValueError, match=r"decoding_backend=opencv must be one of decord \| pyav"):  # at load
        dataset_for(small_cfg(synthetic_root, str(tmp_path), "data.decoding_backend=opencv"), "val")


def test_test_split_yields_videos_x_views_x_crops(synthetic_root, tmp_path):
    cfg = small_cfg(synthetic_root, str(tmp_path), "test.num_ensemble_views=2", "test.num_spatial_crops=3")
    ds = dataset_for(cfg, "test")          # test_split empty: falls back to val
    assert ds.num_views == 6 and len(ds) == len(ds.videos) * 6 == 16 * 6
    seen = {}
    for batch in loader_for(cfg, "test", ds):
        for v, k, label, valid, clip in zip(batch["video_index"].tolist(), batch["view_index"].tolist(),
                                            batch["label"].tolist(), batch["valid"].tolist(), batch["clip"]):
            assert (v, k) not in seen and valid and label == ds.videos[v][1]
            seen[(v, k)] = clip
    assert set(seen) == {(v, k) for v in range(16) for k in range(6)}
    # views differ: two temporal clips and three crops of one video are not all the same picture
    assert all(not torch.equal(seen[(v, 0)], seen[(v, 3)]) for v in range(16))       # temporal views differ
    assert any(not torch.equal(seen[(v, 0)], seen[(v, 2)]) for v in range(16))       # crops of non-square videos


@pytest.fixture
def broken_root(synthetic_root, tmp_path):
    root = copy_root(synthetic_root, str(tmp_path / "root"))
    clear_index_cache()
    names = [line.split()[0] for line in open(os.path.join(root, "train.txt"))]
    good = os.path.join(root, names[0])
    broken = {}
    for name, kind in zip(names[1:20:5], ["empty", "truncated", "text", "zero_frames"]):
        make_broken(os.path.join(root, name), kind, good)
        broken[os.path.join(root, name)] = kind
    return root, broken


OPTION_SETS = [[], ["data.normalize_on_device=true"], ["data.decoding_backend=pyav"]]


@pytest.mark.parametrize("opts", OPTION_SETS, ids=["default", "uint8", "pyav"])
def test_broken_videos_never_crash_a_training_epoch(broken_root, tmp_path, opts):
    root, broken = broken_root
    cfg = small_cfg(root, str(tmp_path / "out"), "data.num_workers=2", "train.batch_size=4", *opts)
    loader = loader_for(cfg, "train")
    skipped, clips = [], 0
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            skipped += batch["skipped"]
            clips += batch["clip"].shape[0]
            assert bool(batch["valid"].all())
        assert sorted(loader.broken) == sorted(broken)      # this epoch's broken files, each once
        assert loader.position == 0                         # between passes
    assert clips == 2 * 24                                  # every slot filled by a substitute
    assert set(p for p, _ in skipped) == set(broken)        # each broken video reported, by path
    assert all(reason for _, reason in skipped)


def test_all_retries_failing_raises_with_paths(broken_root, tmp_path):
    root, broken = broken_root
    cfg = small_cfg(root, str(tmp_path), "data.num_retries=3")
    ds = dataset_for(cfg, "train")
    ds.videos = [(p, 0) for p in broken]
    with pytest.raises(BrokenVideosError) as e:
        ds[0]
    assert "4 videos in a row" in str(e.value) and sum(p in str(e.value) for p in broken) >= 1


@pytest.mark.parametrize("opts", OPTION_SETS, ids=["default", "uint8", "pyav"])
def test_test_split_reports_broken_videos_without_substituting(broken_root, tmp_path, opts):
    root, broken = broken_root
    cfg = small_cfg(root, str(tmp_path), "data.test_split=train.txt", "data.classes_file=classes.txt",
                    "test.num_ensemble_views=1", "test.num_spatial_crops=1", *opts)
    ds = dataset_for(cfg, "test")
    bad = {}
    for batch in loader_for(cfg, "test", ds):
        assert batch["skipped"] == []
        for v, valid, err, clip in zip(batch["video_index"].tolist(), batch["valid"].tolist(), batch["error"], batch["clip"]):
            if not valid:
                bad[ds.videos[v][0]] = err
                assert err and not clip.any()
    assert set(bad) == set(broken)
    assert len({ds[i]["clip"].dtype for i in range(len(ds))}) == 1   # a broken video's zeros match the others


def _batches(cfg, n=2):
    loader = loader_for(cfg, "train")
    loader.sampler.set_epoch(1)
    out = []
    for i, b in enumerate(loader):
        out.append((b["clip"], b["video_index"]))
        if i + 1 == n:
            break
    return out


def test_determinism_under_a_seed(synthetic_root, tmp_path):
    a = _batches(small_cfg(synthetic_root, str(tmp_path), "seed=3", "data.num_workers=2"))
    b = _batches(small_cfg(synthetic_root, str(tmp_path), "seed=3", "data.num_workers=2"))
    c = _batches(small_cfg(synthetic_root, str(tmp_path), "seed=4", "data.num_workers=2"))
    for (x, i), (y, j) in zip(a, b):
        assert torch.equal(i, j) and torch.equal(x, y)
    assert not all(torch.equal(i, j) and torch.equal(x, y) for (x, i), (y, j) in zip(a, c))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_sampler_disjoint_no_padding(world):
    for size in range(0, 14):
        shards = [list(ShardSampler(size, r, world)) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert sorted(flat) == list(range(size)) and len(flat) == len(set(flat))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_per_process_batch_must_divide(synthetic_root, tmp_path, monkeypatch):
    assert per_process_batch(8, "train.batch_size", 2) == 4
    import videoattn.utils.distributed as distributed
    monkeypatch.setattr(distributed, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="train.batch_size=4 is the global batch and must be a positive multiple .* \\(3\\)"):
        loader_for(small_cfg(synthetic_root, str(tmp_path)), "train")


def _ddp_worker(rank, world, port, root, out, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = small_cfg(root, out, "train.batch_size=4", "test.batch_size=4")
        seen = {}
        for split in ("train", "val", "test"):
            seen[split] = [(int(v), int(k)) for b in loader_for(cfg, split)
                           for v, k in zip(b["video_index"], b["view_index"])]
        queue.put((rank, seen))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_sharding(synthetic_root, tmp_path):
    """Real gloo process group: val/test shards are disjoint and complete; train shards are disjoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, synthetic_root, str(tmp_path), queue)) for r in range(2)]
    [p.start() for p in procs]
    results = dict(queue.get(timeout=120) for _ in procs)
    [p.join(60) for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    for split, total in (("val", {(v, 0) for v in range(16)}), ("test", {(v, k) for v in range(16) for k in range(6)})):
        a, b = results[0][split], results[1][split]
        assert not set(a) & set(b) and set(a) | set(b) == total and len(a) + len(b) == len(total)
    train0, train1 = results[0]["train"], results[1]["train"]
    assert len(train0) == len(train1) == 12 and not set(train0) & set(train1)
