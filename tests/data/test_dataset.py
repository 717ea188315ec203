"""Dataset items, multi-view test items, the broken-file policy through real DataLoader workers,
determinism, samplers, distributed sharding (items against PySlowFast's and mmaction2's own code:
test_protocol_dataset.py)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data_helpers import copy_root, make_broken, small_cfg
from videoattn.data import BrokenVideosError
from videokit import dataset_for, loader_for
from videoattn.data.annotations import clear_index_cache
from videoattn.utils.distributed import per_process_batch
from videoattn.data.samplers import ShardSampler

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
    """data.decoding_backend=pyav reads the frames decord reads (val: one fixed draw per video)."""
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
