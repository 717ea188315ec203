"""Data benchmark: the training loader on a Kinetics-like download, raw vs prepared, and against peers.

    python tools/benchmark.py data [--videos 16] [--seconds 10] [--clips 48] [--rounds 2] [--data-dir DIR]
                                   [--config configs/kinetics400/I3D_R50.yaml] [--gops 8 16 32 64] [--rss 200 2000]
    python tools/benchmark.py data --quick      # every code path on a tiny set, well under a minute

One run measures, on the same generated raw clips (:mod:`benchmarks.kinetics_set`: 360p, 30 fps,
x264's default keyframe interval) and their copies prepared by ``tools/prepare_data.py``'s library
(short side 320, a keyframe every 32 frames), with the config's recipe (default: the shipped
Kinetics-400 config, 8 x 8 at 30 fps, jitter [256, 320], crop 224):

* ours: ``build_dataset`` + ``build_loader`` (``num_workers=0``: everything in this process), up to
  the collated batch (also with ``normalize_on_device``: uint8 batches, the PyAV backend, and
  ``data.clips_per_video=2``: batches of half as many videos with two clips each, one decode per video);
* the decode-only bound: decord open + one ``get_batch`` of exactly the frames our loader drew;
* peers (:mod:`benchmarks.peers`): pytorchvideo's Kinetics dataset (decord), mmaction2's decord
  pipeline, PySlowFast's default PyAV decoder (decoding only, on our clips);
* preparation: videos per CPU-second of the prepare workers.

Per core = clips per CPU-second of this process (all its threads: decord's and torch's included),
so the numbers hold on a busy machine where wall time does not; wall clips/s are printed too.
Every loader runs single-threaded (torch, OpenCV, decord where the peer lets it) in batches of 8,
with glibc malloc tuned as our loader workers tune it (:func:`videoattn.utils.malloc.tune_malloc`).
Rows are measured in ``--rounds`` interleaved rounds; each keeps its best round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from benchmarks import peers
from benchmarks.kinetics_set import make_raw_set, prepare_set

Clips = List[Tuple[str, np.ndarray]]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MULTI = "ours, raw, clips_per_video=2"


@dataclass
class Recipe:
    num_frames: int
    sampling_rate: int
    target_fps: float
    jitter: List[int]
    crop: int
    mean: List[float]
    std: List[float]


@dataclass
class Rate:
    cpu: float = float("inf")  # CPU seconds per clip (best round)
    wall: float = float("inf")  # wall seconds per clip (same round)

    @property
    def per_core(self) -> float:
        return 1.0 / self.cpu

    @property
    def per_second(self) -> float:
        return 1.0 / self.wall


def timed(batches: Iterator[int], clips: int, warmup: int = 1) -> Rate:
    """Seconds per clip over at least ``clips`` clips of ``batches`` (clips per step), after ``warmup`` steps."""
    for _ in range(warmup):
        next(batches)
    cpu, wall, seen = time.process_time(), time.perf_counter(), 0
    while seen < clips:
        seen += next(batches)
    return Rate((time.process_time() - cpu) / seen, (time.perf_counter() - wall) / seen)


# ------------------------------------------------------------------------------------------ ours
def our_batches(data, batch_size: int, seed: int, record: Optional[Clips] = None) -> Iterator[int]:
    """Clips per batch of our train loader (in this process): the collated batch a training step gets
    (float32 normalised, or uint8 with ``normalize_on_device``: the device normalises those, as
    mmaction2's data preprocessor does, and that is not loader work); the clips drawn are appended to
    ``record`` as (path, frame indices)."""
    import torch

    from videoattn.data import build_dataset, build_loader

    torch.manual_seed(seed)  # the train clips are drawn from torch's global generator (no workers here)
    dataset = build_dataset(data, "train")
    loader = build_loader(dataset, data, batch_size, seed=seed)
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if record is not None:
                record += [
                    (dataset.videos[v][0], idx.numpy())
                    for v, idx in zip(batch["video_index"].tolist(), batch["frame_indices"])
                ]
            yield int(batch["clip"].shape[0])
        epoch += 1


def bound_clips(clips: Clips, threads: int = 1) -> Iterator[int]:
    """The decode-only bound: decord open + one get_batch of exactly ``clips``' frames, forever."""
    import decord

    while True:
        for path, idx in clips:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
            vr.get_batch(idx.tolist()).asnumpy()
            del vr
            yield 1


def same_clips(a: Clips, b: Clips) -> bool:
    """Same frame indices of the same videos (by file stem: raw and prepared copies match)."""

    def stem(p: str) -> str:
        return os.path.splitext(os.path.basename(p))[0]

    return len(a) == len(b) and all(stem(p) == stem(q) and np.array_equal(i, j) for (p, i), (q, j) in zip(a, b))


def on_prepared(clips: Clips, prepared_root: str) -> Clips:
    """``clips`` with each raw path replaced by its prepared copy (same stem; frames kept whole)."""
    where = {
        os.path.splitext(n)[0]: os.path.join(d, n)
        for d, _, files in os.walk(prepared_root)
        for n in files
        if n.endswith(".mp4") and not n.startswith(".")
    }
    return [(where[os.path.splitext(os.path.basename(p))[0]], idx) for p, idx in clips]


# -------------------------------------------------------------------------------------- the run
def _config(args, root: str):
    from videoattn.config.loader import load_config

    cfg = load_config(
        args.config,
        [
            "data.train_split=train.csv",
            "data.classes_file=classes.txt",
            "data.num_workers=0",
            "data.random_flip=true",
            f"data.root={root}",
            *args.opts,
        ],
    )
    return cfg.data


def _rows(args, raw: str, prepared: str, status: Dict[str, str]) -> Tuple[Dict[str, Rate], Dict[str, Clips]]:
    """Measure every pipeline in ``args.rounds`` interleaved rounds; keep each one's best round."""
    import decord

    data_raw, data_prep = _config(args, raw), _config(args, prepared)
    recipe = Recipe(
        data_raw.num_frames,
        data_raw.sampling_rate,
        data_raw.target_fps,
        list(data_raw.train_jitter_scales),
        data_raw.train_crop_size,
        list(data_raw.mean),
        list(data_raw.std),
    )
    b, n, seed = args.batch_size, args.clips, args.seed
    drawn: Dict[str, Clips] = {"raw": [], "prepared": []}
    makers: Dict[str, Callable[[], Iterator[int]]] = {
        "ours, raw": lambda: our_batches(data_raw, b, seed, drawn["raw"] if not drawn["raw"] else None),
        "ours, raw, normalize_on_device": lambda: our_batches(replace(data_raw, normalize_on_device=True), b, seed),
        "ours, raw, decoding_backend=pyav": lambda: our_batches(replace(data_raw, decoding_backend="pyav"), b, seed),
        MULTI: lambda: our_batches(replace(data_raw, clips_per_video=2), max(1, b // 2), seed),  # b clips per batch
        "ours, prepared": lambda: our_batches(data_prep, b, seed, drawn["prepared"] if not drawn["prepared"] else None),
        "ours, prepared, normalize_on_device": lambda: our_batches(
            replace(data_prep, normalize_on_device=True), b, seed
        ),
        "decode-only bound, raw": lambda: bound_clips(drawn["raw"][:n]),
        "decode-only bound, prepared": lambda: bound_clips(on_prepared(drawn["raw"][:n], prepared)),
    }
    if not args.no_peers:
        makers["PySlowFast PyAV decoder (decode only), raw"] = lambda: peers.pyslowfast_decoder_clips(drawn["raw"][:n])
    if not status["pytorchvideo"]:
        for where, root in (("raw", raw), ("prepared", prepared)):
            lst = os.path.join(root, "train.txt")
            makers[f"pytorchvideo Kinetics (decord), {where}"] = lambda lst=lst: peers.pytorchvideo_batches(
                lst, recipe, b, seed
            )
        makers["pytorchvideo Kinetics (decord, threads=1), raw"] = lambda: peers.pytorchvideo_batches(
            os.path.join(raw, "train.txt"), recipe, b, seed, threads=1
        )
    if not status["mmaction2"]:
        for where, root in (("raw", raw), ("prepared", prepared)):
            lst = os.path.join(root, "train.txt")
            makers[f"mmaction2 VideoDataset (decord), {where}"] = lambda lst=lst: peers.mmaction_batches(
                lst, recipe, b, seed
            )
    rates: Dict[str, Rate] = {name: Rate() for name in makers}
    for r in range(args.rounds):
        for name, make in makers.items():
            # decord's output type is process-wide: pytorchvideo switches it to torch tensors on import
            decord.bridge.set_bridge("torch" if name.startswith("pytorchvideo") else "native")
            rate = timed(make(), n)
            for where in ("raw", "prepared"):  # keep the clips timed: drop the warm-up batch
                if name == f"ours, {where}" and r == 0:
                    drawn[where] = drawn[where][b : b + n]
            if rate.cpu < rates[name].cpu:
                rates[name] = rate
            print(
                f"  round {r + 1}: {name}: {rate.per_core:.2f} clips/CPU-s, {rate.per_second:.2f} clips/s", flush=True
            )
    return rates, drawn


def clips_per_video_line(rates: Dict[str, Rate]) -> str:
    """Our loader with ``data.clips_per_video=2`` vs 1 on the same raw set, per core (same rounds)."""
    two, one = rates[MULTI].per_core, rates["ours, raw"].per_core
    return f"clips_per_video=2 vs 1 (ours, raw, per core): {two / one:.2f}x ({two:.2f} vs {one:.2f} clips/CPU-s)"


def _table(rates: Dict[str, Rate], raw_bound: str, prep_bound: str) -> List[str]:
    lines = [
        f"| {'pipeline':<52} | clips/CPU-s (per core) | clips/s (wall) | vs decode-only bound |",
        f"|{'-' * 54}|-----------------------:|---------------:|---------------------:|",
    ]
    for name, rate in rates.items():
        bound = rates[prep_bound if name.endswith("prepared") or "prepared," in name else raw_bound]
        ratio = f"{rate.per_core / bound.per_core:19.2f}x" if name.startswith("ours") else f"{'-':>20}"
        lines.append(f"| {name:<52} | {rate.per_core:22.2f} | {rate.per_second:14.2f} | {ratio} |")
    return lines


def _goals(rates: Dict[str, Rate], status: Dict[str, str]) -> List[str]:
    ours_raw, ours_prep = rates["ours, raw"].per_core, rates["ours, prepared"].per_core
    lines = [
        f"prepared vs raw (ours, per core): {ours_prep / ours_raw:.2f}x (goal >= 2x: "
        f"{'met' if ours_prep >= 2 * ours_raw else 'NOT met'})"
    ]
    peer_raw = {
        k: v.per_core
        for k, v in rates.items()
        if k.endswith(", raw") and not k.startswith(("ours", "decode")) and "decode only" not in k
    }
    if peer_raw:
        best = max(peer_raw, key=peer_raw.get)
        lines.append(
            f"ours vs the best peer loader on raw files (per core): {ours_raw / peer_raw[best]:.2f}x vs {best} "
            f"(goal >= 1.5x: {'met' if ours_raw >= 1.5 * peer_raw[best] else 'NOT met'}); ours on prepared "
            f"files vs it: {ours_prep / peer_raw[best]:.2f}x"
        )
    lines += [f"peer not measured: {k}: {v}" for k, v in status.items() if v]
    lines.append(
        "loader / decode-only bound (reported, not a goal): "
        f"raw {ours_raw / rates['decode-only bound, raw'].per_core:.2f}x, "
        f"prepared {ours_prep / rates['decode-only bound, prepared'].per_core:.2f}x"
    )
    return lines


# ------------------------------------------------------------------------------------ extra runs
def gop_sweep(args, raw: str, clips: Clips, work: str) -> List[str]:
    """Per keyframe interval (and GOP 32 with x264's default CABAC instead of CAVLC): prepared MB per
    10 s of video and decode-only CPU ms per clip on ``clips`` (the clips our loader drew), against
    the raw files (x264's default keyframe interval)."""
    tens = args.videos * args.seconds / 10
    raw_ms = timed(bound_clips(clips), len(clips)).cpu * 1e3
    rows, raw_mb = [], 0.0
    for gop, cabac in [(g, False) for g in args.gops] + [(32, True)]:
        out = os.path.join(work, f"gop{gop}_{cabac}")
        shutil.rmtree(out, ignore_errors=True)
        p = prepare_set(raw, out, gop, args.prep_workers, cabac=cabac)
        ms = timed(bound_clips(on_prepared(clips, out)), len(clips)).cpu * 1e3
        rows.append(
            f"| {gop}{', CABAC' if cabac else ''} | {p.mb_prepared / tens:.2f} | {ms:.1f} | {raw_ms / ms:.2f}x | "
            f"{p.cpu_s / p.videos:.2f} |"
        )
        raw_mb = p.mb_raw
        shutil.rmtree(out, ignore_errors=True)
    return [
        "| keyframe every (short side 320, CAVLC) | MB per 10 s | decode-only CPU ms per clip | vs raw | "
        "prepare CPU s per video |",
        "|---|---:|---:|---:|---:|",
        f"| raw: 360p, x264 defaults (250, CABAC) | {raw_mb / tens:.2f} | {raw_ms:.1f} | 1.00x | - |",
    ] + rows


def rss_check(data, workers: int, early: int, late: int, batch_size: int, seed: int) -> str:
    """Resident memory (main + workers) of one persistent ``workers``-worker loader after ``early``
    and ``late`` clips: the later must stay within 10% of the earlier."""
    from videoattn.data import build_dataset, build_loader

    data = replace(data, num_workers=workers)
    loader = build_loader(build_dataset(data, "train"), data, batch_size, seed=seed)
    seen, epoch, rss, procs = 0, 0, {}, 0
    while seen < late:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            seen += int(batch["clip"].shape[0])
            pids = [os.getpid()] + [w.pid for w in getattr(getattr(loader, "_iterator", None), "_workers", [])]
            for mark in (early, late):
                if seen >= mark and mark not in rss:
                    rss[mark], procs = sum(_rss_mb(pid) for pid in pids), len(pids)
            if seen >= late:
                break
        epoch += 1
    growth = rss[late] / rss[early] - 1
    return (
        f"resident memory, {workers} workers + main ({procs} processes): {rss[early]:.0f} MiB after {early} clips, "
        f"{rss[late]:.0f} MiB after {late} clips: {growth * 100:+.1f}% "
        f"({'within' if abs(growth) <= 0.1 else 'OUTSIDE'} 10%)"
    )


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


# ------------------------------------------------------------------------------------------- main
def _arguments(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark.py data", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        default=os.path.join(REPO, "configs", "kinetics400", "I3D_R50.yaml"),
        help="the recipe (its data section)",
    )
    p.add_argument("--videos", type=int, default=16, help="generated raw clips")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each raw clip")
    p.add_argument("--size", type=int, nargs=2, default=[640, 360], metavar=("W", "H"), help="raw frame size")
    p.add_argument("--clips", type=int, default=48, help="clips timed per row and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prep-workers", type=int, default=1, help="prepare_data worker processes")
    p.add_argument("--data-dir", default="", help="keep the raw set here (reused by later runs); default: a temp dir")
    p.add_argument("--gops", type=int, nargs="*", default=[], help="also sweep these keyframe intervals")
    p.add_argument(
        "--rss",
        type=int,
        nargs=2,
        default=None,
        metavar=("EARLY", "LATE"),
        help="also the memory check of a 2-worker loader after EARLY and LATE clips",
    )
    p.add_argument("--no-peers", action="store_true", help="only our rows (e.g. another source size)")
    p.add_argument("--quick", action="store_true", help="tiny set, few clips, one round: the code paths only")
    p.add_argument("opts", nargs="*", default=[], help="key=value config overrides")
    args = p.parse_args(argv[1:])
    if args.quick:
        args.videos, args.seconds, args.size, args.clips, args.rounds, args.batch_size = 4, 2.5, [192, 108], 4, 1, 2
        args.gops = args.gops[:1]
        args.opts = ["data.train_jitter_scales=[64,80]", "data.train_crop_size=56", *args.opts]
        if args.rss:
            args.rss = [4, 8]
    return args


def main(argv: List[str]) -> int:
    import torch

    from videoattn.utils.malloc import tune_malloc

    args = _arguments(argv)
    torch.set_num_threads(1)  # per core: every pipeline single-threaded (decord: as each lets it)
    tune_malloc()  # what our loader workers do (init_worker); here every pipeline runs in this process
    try:
        import cv2

        cv2.setNumThreads(0)  # what mmengine sets in its training runs (mmaction2 resizes with OpenCV)
    except ImportError:
        pass
    tmp = tempfile.TemporaryDirectory(prefix="videoattn_bench_data_")
    raw = args.data_dir or os.path.join(tmp.name, "raw")
    started = time.time()
    make_raw_set(raw, args.videos, args.seconds, args.size[0], args.size[1])
    print(
        f"raw set: {args.videos} clips of {args.seconds:g} s, {args.size[0]}x{args.size[1]}, 30 fps, H.264 with x264's "
        f"defaults (keyframe interval 250) in {raw} ({time.time() - started:.0f} s)",
        flush=True,
    )
    prepared = os.path.join(tmp.name, "prepared")
    prep = prepare_set(raw, prepared, 32, args.prep_workers)
    status = {peer: "--no-peers" for peer in ("pytorchvideo", "mmaction2")} if args.no_peers else peers.available()
    d = _config(args, raw)
    print(
        f"recipe ({args.config}): {d.num_frames} frames x rate {d.sampling_rate} at {d.target_fps:g} fps, jitter "
        f"{list(d.train_jitter_scales)}, crop {d.train_crop_size}; batches of {args.batch_size}; {args.clips} clips "
        f"per row and round, {args.rounds} rounds; cpus={os.cpu_count()}; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    rates, drawn = _rows(args, raw, prepared, status)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("\n".join(_table(rates, "decode-only bound, raw", "decode-only bound, prepared")))
    print(f"\nours drew the same clips on raw and prepared files: {same_clips(drawn['raw'], drawn['prepared'])}")
    print(
        f"preparation (short side 320, keyframe every 32, veryfast crf 23 CAVLC, {prep.workers} worker): "
        f"{prep.videos} videos "
        f"in {prep.wall_s:.1f} s wall, {prep.cpu_s:.1f} CPU s: {prep.videos / prep.cpu_s:.2f} videos/s per core "
        f"({prep.cpu_s / prep.videos:.2f} CPU s per {args.seconds:g}-s video); "
        f"{prep.mb_raw:.1f} MB raw -> {prep.mb_prepared:.1f} MB prepared"
    )
    print(clips_per_video_line(rates))
    print("\n".join(_goals(rates, status)))
    if args.gops:
        print("\n" + "\n".join(gop_sweep(args, raw, drawn["raw"], tmp.name)))
    if args.rss:
        print("\n" + rss_check(d, 2, args.rss[0], args.rss[1], args.batch_size, args.seed))
    tmp.cleanup()
    return 0
