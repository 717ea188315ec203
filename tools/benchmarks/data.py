"""Data benchmark: the training loader on a Kinetics-like download, raw vs prepared, every decoder, and peers.

    python tools/benchmark.py data [--videos 16] [--seconds 10] [--clips 48] [--rounds 2] [--data-dir DIR]
                                   [--config configs/kinetics400/I3D_R50.yaml] [--gops 8 16 32 64] [--rss 200 2000]
                                   [--decoder-rss 200 2000] [--exactness] [key=value ...]
    python tools/benchmark.py data --quick      # every code path on a tiny set, well under a minute

One run measures, on the same generated raw clips (:mod:`benchmarks.kinetics_set`: 360p, 30 fps,
x264's default keyframe interval) and their copies prepared by ``tools/prepare_data.py``'s library
(short side 320, a keyframe every 32 frames; and the same with x264's referenced B-frames, the
format before 2026-12-07), with the config's recipe (default: the shipped Kinetics-400 config, 8 x 8
at 30 fps, jitter [256, 320], crop 224; ``data.num_frames=32 data.sampling_rate=2`` for 32 x 2):

* ours: ``build_dataset`` + ``build_loader`` (``num_workers=0``: everything in this process), up to
  the collated batch, with the default decoder (PyAV) and with ``decoding_backend=decord`` (also
  ``normalize_on_device``: uint8 batches; ``data.clips_per_video=2``: batches of half as many
  videos with two clips each, one decode per video);
* each decoder's decode-only bound (:mod:`benchmarks.decoders`: decord 0.6, decord2 in a child
  process, PyAV with and without skipping, with FFmpeg's threads): open + read exactly the frames
  our loader drew + close; the loader's ratio to its own decoder's bound;
* peers (:mod:`benchmarks.peers`) on the same raw and the same prepared files: pytorchvideo's
  Kinetics dataset (decord), mmaction2's decord pipeline, PySlowFast's default PyAV decoder
  (decoding only, on our clips);
* preparation: videos per CPU-second of the prepare workers;
* ``--exactness``: every decoder on every file kind against a reference decode (frames equal / not);
  ``--decoder-rss``: each decoder's resident memory over many clips (a fresh process each).

Per core = clips per CPU-second of this process (all its threads: decord's and torch's included;
a child's own CPU time for decord2), so the numbers hold on a busy machine where wall time does
not; wall clips/s are printed too. Every loader runs single-threaded (torch, OpenCV, decord where
the peer lets it) in batches of 8, with glibc malloc tuned as our loader workers tune it
(:func:`videoattn.utils.malloc.tune_malloc`). Rows are measured in ``--rounds`` interleaved rounds;
each keeps its best round.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from benchmarks import data_report, decoders, peers
from benchmarks.data_extra import decoder_rss, exactness, gop_sweep, on_prepared, rss_check
from benchmarks.data_report import MULTI, SETS
from benchmarks.decoders import MODES, Rate, timed
from benchmarks.kinetics_set import make_raw_set, prepare_set

Clips = List[Tuple[str, np.ndarray]]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Recipe:
    num_frames: int
    sampling_rate: int
    target_fps: float
    jitter: List[int]
    crop: int
    mean: List[float]
    std: List[float]


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


def same_clips(a: Clips, b: Clips) -> bool:
    """Same frame indices of the same videos (by file stem: raw and prepared copies match)."""

    def stem(p: str) -> str:
        return os.path.splitext(os.path.basename(p))[0]

    return len(a) == len(b) and all(stem(p) == stem(q) and np.array_equal(i, j) for (p, i), (q, j) in zip(a, b))


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


def _recipe(d) -> Recipe:
    return Recipe(
        d.num_frames,
        d.sampling_rate,
        d.target_fps,
        list(d.train_jitter_scales),
        d.train_crop_size,
        list(d.mean),
        list(d.std),
    )


def _ours(args, roots: Dict[str, str], drawn: Dict[str, Clips]) -> Dict[str, Callable[[], Iterator[int]]]:
    """Our loader's rows: the default decoder (PyAV) and decord on each file set."""
    data = {where: _config(args, root) for where, root in roots.items()}
    raw, prep = data["raw"], data["prepared"]
    b, seed = args.batch_size, args.seed

    def record(where: str) -> Optional[Clips]:
        return drawn[where] if not drawn[where] else None  # the first round's clips

    return {
        "ours, raw": lambda: our_batches(raw, b, seed, record("raw")),
        "ours, raw, decoding_backend=decord": lambda: our_batches(replace(raw, decoding_backend="decord"), b, seed),
        "ours, raw, normalize_on_device": lambda: our_batches(replace(raw, normalize_on_device=True), b, seed),
        MULTI: lambda: our_batches(replace(raw, clips_per_video=2), max(1, b // 2), seed),  # b clips per batch
        "ours, prepared": lambda: our_batches(prep, b, seed, record("prepared")),
        "ours, prepared, decoding_backend=decord": lambda: our_batches(
            replace(prep, decoding_backend="decord"), b, seed
        ),
        "ours, prepared, normalize_on_device": lambda: our_batches(replace(prep, normalize_on_device=True), b, seed),
        f"ours, {SETS[2]}": lambda: our_batches(data[SETS[2]], b, seed),
    }


def _bounds(args, roots: Dict[str, str], drawn: Dict[str, Clips]) -> Dict[str, Callable]:
    """Each decoder's decode-only bound on the clips our loader drew, per file set: a generator
    (timed here) or, for a decoder in a side folder (decord2), a Rate measured by a child process."""
    rows: Dict[str, Callable] = {}
    for where, root in roots.items():
        modes = list(MODES) if where != SETS[2] else ["decord", "pyav", "pyav, no skip"]
        for name in modes:
            mode = MODES[name]
            if mode.side and decoders.decord2_missing():
                continue
            clips = lambda root=root: on_prepared(drawn["raw"][: args.clips], root)  # noqa: E731
            if mode.side:
                rows[f"decode-only bound: {name}, {where}"] = lambda m=mode, c=clips: decoders.run(
                    m, "speed", clips=c(), n=args.clips
                )
            else:
                rows[f"decode-only bound: {name}, {where}"] = lambda m=mode, c=clips: decoders.clip_stream(m, c())
    return rows


def _peers(args, roots: Dict[str, str], recipe: Recipe, status: Dict[str, str], drawn) -> Dict[str, Callable]:
    """The peers' rows, each on the raw and on the prepared files."""
    b, seed, rows = args.batch_size, args.seed, {}
    for where in SETS[:2]:
        lst = os.path.join(roots[where], "train.txt")
        if not args.no_peers:
            rows[f"PySlowFast PyAV decoder (decode only), {where}"] = lambda r=roots[where]: (
                peers.pyslowfast_decoder_clips(on_prepared(drawn["raw"][: args.clips], r))
            )
        if not status["pytorchvideo"]:
            rows[f"pytorchvideo Kinetics (decord), {where}"] = lambda lst=lst: peers.pytorchvideo_batches(
                lst, recipe, b, seed
            )
            if where == "raw":
                rows["pytorchvideo Kinetics (decord, threads=1), raw"] = lambda lst=lst: peers.pytorchvideo_batches(
                    lst, recipe, b, seed, threads=1
                )
        if not status["mmaction2"]:
            rows[f"mmaction2 VideoDataset (decord), {where}"] = lambda lst=lst: peers.mmaction_batches(
                lst, recipe, b, seed
            )
    return rows


def _rows(args, roots: Dict[str, str], status: Dict[str, str]) -> Tuple[Dict[str, Rate], Dict[str, Clips]]:
    """Measure every pipeline in ``args.rounds`` interleaved rounds; keep each one's best round."""
    import decord

    drawn: Dict[str, Clips] = {"raw": [], "prepared": []}
    makers = {
        **_ours(args, roots, drawn),
        **_bounds(args, roots, drawn),
        **_peers(args, roots, _recipe(_config(args, roots["raw"])), status, drawn),
    }
    rates: Dict[str, Rate] = {name: Rate() for name in makers}
    b, n = args.batch_size, args.clips
    for r in range(args.rounds):
        for name, make in makers.items():
            # decord's output type is process-wide: pytorchvideo switches it to torch tensors on import
            decord.bridge.set_bridge("torch" if name.startswith("pytorchvideo") else "native")
            made = make()
            rate = made if isinstance(made, Rate) else timed(made, n)
            for where in ("raw", "prepared"):  # keep the clips timed: drop the warm-up batch
                if name == f"ours, {where}" and r == 0:
                    drawn[where] = drawn[where][b : b + n]
            if rate.cpu < rates[name].cpu:
                rates[name] = rate
            print(
                f"  round {r + 1}: {name}: {rate.per_core:.2f} clips/CPU-s, {rate.per_second:.2f} clips/s", flush=True
            )
    return rates, drawn


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
    p.add_argument(
        "--decoder-rss",
        type=int,
        nargs=2,
        default=None,
        metavar=("EARLY", "LATE"),
        help="also each decoder's resident memory after EARLY and LATE clips (prepared files, a fresh process each)",
    )
    p.add_argument("--exactness", action="store_true", help="also every decoder on every file kind vs a reference")
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
        if args.decoder_rss:
            args.decoder_rss = [4, 8]
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
    roots = {
        "raw": raw,
        **{where: os.path.join(tmp.name, where.replace(", ", "_").replace(" ", "_")) for where in SETS[1:]},
    }
    prep = prepare_set(raw, roots[SETS[1]], 32, args.prep_workers)
    prepare_set(raw, roots[SETS[2]], 32, args.prep_workers, b_pyramid=True)
    status = {peer: "--no-peers" for peer in ("pytorchvideo", "mmaction2")} if args.no_peers else peers.available()
    d = _config(args, raw)
    print(
        f"recipe ({args.config}): {d.num_frames} frames x rate {d.sampling_rate} at {d.target_fps:g} fps, jitter "
        f"{list(d.train_jitter_scales)}, crop {d.train_crop_size}; batches of {args.batch_size}; {args.clips} clips "
        f"per row and round, {args.rounds} rounds; cpus={os.cpu_count()}; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; decoders: "
        + "; ".join(f"{m.name} = {m.side or 'this venv'}" for m in MODES.values() if m.library == "decord")
        + (f" ({decoders.decord2_missing()})" if decoders.decord2_missing() else ""),
        flush=True,
    )
    rates, drawn = _rows(args, roots, status)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("\n".join(data_report.table(rates)))
    print(f"\nours drew the same clips on raw and prepared files: {same_clips(drawn['raw'], drawn['prepared'])}")
    print(
        f"preparation (short side 320, keyframe every 32, veryfast crf 23 CAVLC, unreferenced B-frames, "
        f"{prep.workers} worker): {prep.videos} videos "
        f"in {prep.wall_s:.1f} s wall, {prep.cpu_s:.1f} CPU s: {prep.videos / prep.cpu_s:.2f} videos/s per core "
        f"({prep.cpu_s / prep.videos:.2f} CPU s per {args.seconds:g}-s video); "
        f"{prep.mb_raw:.1f} MB raw -> {prep.mb_prepared:.1f} MB prepared"
    )
    print(data_report.clips_per_video_line(rates))
    print("\n".join(data_report.goals(rates, status)))
    if args.gops:
        print("\n" + "\n".join(gop_sweep(args, raw, drawn["raw"], tmp.name)))
    if args.rss:
        print("\n" + rss_check(d, 2, args.rss[0], args.rss[1], args.batch_size, args.seed))
    if args.decoder_rss:
        print("\n" + "\n".join(decoder_rss(drawn["prepared"], *args.decoder_rss)))
    if args.exactness:
        print("\n" + "\n".join(exactness(tmp.name)))
    tmp.cleanup()
    return 0
