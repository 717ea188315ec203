"""``tools/benchmark.py eval`` and ``tools/benchmark.py features`` (argv[0] picks the suite).

eval: multi-view testing throughput (views/s, video-seconds/s) of the demo preset and of I3D R50
at 8x224, one process, on a small generated synthetic set (real encoded videos). Named baselines
measured in the same run, same batch shapes:

* ``model only``: forward passes on random tensors (no decoding): the bound for the pipeline;
* ``decode+transform only``: the test loader iterated without the model.

features: sliding-window feature extraction (``extract_features``, stride = one window) in
video-seconds/s and windows/s, against ``model only`` (``model.extract`` on random windows) and
``decode+transform only`` (the extraction's window loader iterated without the model).
Both use ``data.num_workers=1`` (decoding overlaps the model in one worker process).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from videoattn.apps import extract as ex
from videoattn.config import load_config
from videoattn.data import build_dataset, build_loader, open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.data.transforms import DeviceNormalizer
from videoattn.data.windows import stride_seconds
from videoattn.datasets.synthetic import make_synthetic_dataset
from videoattn.engine.device import for_device
from videoattn.engine.inference import build_inference_model
from videoattn.evaluation.evaluate import score_multiview
from videoattn.utils.distributed import per_process_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CFG = os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml")
# name -> (config file, overrides, videos used: 0 = all)
SETUPS: Dict[str, Tuple[Optional[str], List[str], int]] = {
    "demo (I3D_NL_CBAM_R18, 8x64)": (DEMO_CFG, [], 0),
    "I3D_R50, 8x224": (
        None,
        [
            "model.preset=I3D_R50",
            "data.num_frames=8",
            "data.sampling_rate=8",
            "data.test_crop_size=224",
            "test.num_ensemble_views=2",
            "test.num_spatial_crops=3",
            "test.batch_size=6",
            "features.batch_size=4",
        ],
        4,
    ),
}


def _timed(fn: Callable[[], object]) -> Tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _model_only(model: torch.nn.Module, shape: Tuple[int, ...], iters: int, fn: str = "forward") -> float:
    """Items/s of ``model.<fn>`` on random input of ``shape``: median over ``iters`` timed calls
    after one warm-up call (robust to other processes sharing the CPU)."""
    x = torch.randn(*shape)
    call = model if fn == "forward" else (lambda t: ex.window_features(model, t, "pool"))
    with torch.inference_mode():
        call(x)
        times = sorted(_timed(lambda: call(x))[1] for _ in range(iters))
    return shape[0] / times[len(times) // 2]


def _durations(paths: List[str]) -> float:
    total = 0.0
    for p in paths:
        r = open_video(p)
        total += r.num_frames / r.fps
    return total


def _eval_row(cfg, iters: int) -> Dict[str, float]:
    dataset = build_dataset(cfg.data, "test", cfg.test.num_ensemble_views, cfg.test.num_spatial_crops)
    model = build_inference_model(cfg, None, torch.device("cpu"), random_init=True)
    seconds = _durations([v[0] for v in dataset.videos])
    views = len(dataset)
    shape = (cfg.test.batch_size, 3, cfg.data.num_frames, cfg.data.test_crop_size, cfg.data.test_crop_size)
    _model_only(model, shape, 1)  # warm-up (allocator, oneDNN kernels)
    batch = per_process_batch(cfg.test.batch_size, "test.batch_size")

    def loader():
        return build_loader(dataset, cfg.data, batch, cfg.seed)

    normalize = DeviceNormalizer(cfg.data.mean, cfg.data.std)
    _, dt = _timed(
        lambda: score_multiview(
            model, loader(), len(dataset.videos), cfg.model.num_classes, normalize, cfg.test.aggregation
        )
    )
    _, dt_data = _timed(lambda: [None for _ in loader()])
    return {
        "views_s": views / dt,
        "video_s_s": seconds / dt,
        "model_views_s": _model_only(model, shape, iters),
        "data_views_s": views / dt_data,
        "videos": len(dataset.videos),
        "views": views,
    }


def _features_row(cfg, source: str, iters: int, tmp: str) -> Dict[str, float]:
    paths, _ = ex.list_inputs(cfg.data, source)
    seconds = _durations(paths)
    model = build_inference_model(cfg, None, torch.device("cpu"), random_init=True)
    bs = cfg.features.batch_size
    shape = (bs, 3, cfg.data.num_frames, cfg.data.test_crop_size, cfg.data.test_crop_size)
    _model_only(model, shape, 1, "extract")
    summary, dt = _timed(lambda: ex.extract_features(cfg, source, os.path.join(tmp, "features"), random_init=True))
    # 0 = one window length (the protocol's clip at target_fps: the synthetic videos' fps vary)
    stride = stride_seconds(cfg.data, cfg.features) or Protocol.from_data(cfg.data).window_seconds(
        cfg.data.target_fps, ClipSpec.from_data(cfg.data)
    )
    windows = 0

    def decode_only():
        nonlocal windows
        for item in ex.window_loader(list(enumerate(paths)), cfg.data, cfg.features):
            windows += getattr(item, "num_windows", 0)  # a WindowChunk

    _, dt_data = _timed(decode_only)
    model_windows_s = _model_only(model, shape, iters, "extract")
    return {
        "video_s_s": seconds / dt,
        "windows_s": windows / dt,
        "model_windows_s": model_windows_s,
        "data_windows_s": windows / dt_data,
        "videos": summary["num_done"],
        "windows": windows,
        "model_video_s_s": model_windows_s * stride,
    }


def _subset(data: str, max_videos: int) -> str:
    """The val split, or a CSV of its first ``max_videos`` rows (relative to ``data``)."""
    if not max_videos:
        return "val.csv"
    with open(os.path.join(data, "val.csv")) as f:
        lines = f.readlines()
    with open(os.path.join(data, f"val_first{max_videos}.csv"), "w") as f:
        f.writelines(lines[: 1 + max_videos])
    return f"val_first{max_videos}.csv"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmark.py eval|features", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("suite", choices=["eval", "features"])
    p.add_argument("--videos-per-class", type=int, default=3, help="synthetic val videos per class (8 classes)")
    p.add_argument("--iters", type=int, default=5, help="timed model-only batches (median)")
    p.add_argument("--setups", nargs="+", default=list(SETUPS), help=f"subset of: {list(SETUPS)}")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    print(
        f"device: cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads; torch {torch.__version__}; "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available: no GPU run'}); "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"bench_{args.suite}_") as tmp:
        data = os.path.join(tmp, "synthetic")
        make_synthetic_dataset(data, num_classes=8, train_per_class=1, val_per_class=args.videos_per_class, seed=0)
        for name in args.setups:
            cfg_path, overrides, max_videos = SETUPS[name]
            split = _subset(data, max_videos)
            cfg = load_config(
                cfg_path,
                overrides
                + [
                    f"data.root={data}",
                    "data.classes_file=classes.txt",
                    "data.train_split=train.csv",
                    f"data.val_split={split}",
                    "data.test_split=",
                    "data.num_workers=1",
                    "device=cpu",
                    f"output_dir={os.path.join(tmp, 'out')}",
                ],
            )
            cfg = for_device(cfg, torch.device("cpu"))  # as test_net / extract_features resolve it
            if args.suite == "eval":
                rows.append((name, cfg, _eval_row(cfg, args.iters)))
            else:
                rows.append(
                    (
                        name,
                        cfg,
                        _features_row(cfg, os.path.join(data, split), args.iters, os.path.join(tmp, str(len(rows)))),
                    )
                )
    if args.suite == "eval":
        print(
            "\n| setup | views | pipeline views/s | video-s/s | model only views/s | decode+transform only views/s "
            "| pipeline vs model only |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, cfg, r in rows:
            print(
                f"| {name}, {cfg.test.num_ensemble_views}x{cfg.test.num_spatial_crops} views, batch "
                f"{cfg.test.batch_size} | {r['views']} | {r['views_s']:.2f} | {r['video_s_s']:.2f} "
                f"| {r['model_views_s']:.2f} | {r['data_views_s']:.1f} | {r['views_s'] / r['model_views_s']:.2f}x |"
            )
    else:
        print(
            "\n| setup | windows | pipeline video-s/s | windows/s | model only windows/s (video-s/s) "
            "| decode+transform only windows/s | pipeline vs model only |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, cfg, r in rows:
            print(
                f"| {name}, stride {1000 * r['model_video_s_s'] / r['model_windows_s']:.0f} ms, batch "
                f"{cfg.features.batch_size} | {r['windows']} | {r['video_s_s']:.2f} | {r['windows_s']:.2f} "
                f"| {r['model_windows_s']:.2f} ({r['model_video_s_s']:.2f}) | {r['data_windows_s']:.1f} "
                f"| {r['windows_s'] / r['model_windows_s']:.2f}x |"
            )
    return 0
