#!/usr/bin/env python
"""Label videos with a trained model: top-k per video, a timeline of long videos, labelled videos.

    python tools/predict.py --config CFG (--checkpoint CKPT | --pretrained NAME | --model FILE.onnx) \
        --input VIDEO|FOLDER|LIST --output DIR [--top-k 5] [--render] [key=value ...]
    python tools/predict.py --config configs/kinetics400/I3D_R50.yaml --pretrained i3d_r50 \
        --input my_videos/ --output predictions/ --render

Per video the top-k classes from the same views as test_net (test.num_ensemble_views x
test.num_spatial_crops, test.aggregation); for videos longer than a clip the scores of sliding
windows (features.stride_seconds) and the segments where the top label changes. Writes
DIR/predictions.csv, predictions.json, timeline.csv, segments.csv, failed.csv and, with --render,
DIR/<id>.mp4 (top-3 drawn on every frame) and DIR/<id>_timeline.png. No labels are needed;
undecodable videos are listed with their reason. --model FILE.onnx (tools/export.py) runs the
exported file through onnxruntime on the CPU instead (pip install -e '.[export]'), with the same
views and aggregation; its frames, crop, normalisation and classes come from the file. See
videoattn/apps/predict.py.
"""

import sys

from videoattn.apps.predict import format_table, predict_videos
from videoattn.cli import add_checkpoint_argument, config_parser, exit_on_user_error, parse_config
from videoattn.engine.logger import setup_logging
from videoattn.utils.distributed import distributed_run, launch_rank


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--model",
        default="",
        metavar="FILE.onnx",
        help="an ONNX file of tools/export.py, run by onnxruntime (CPU) instead of --checkpoint",
    )
    parser.add_argument("--input", required=True, help="a video, a folder of videos, or a list (CSV/txt) of videos")
    parser.add_argument("--output", required=True, help="output folder (locked while predict runs)")
    parser.add_argument("--top-k", type=int, default=5, help="classes per video and per window (default 5)")
    parser.add_argument(
        "--render",
        action="store_true",
        help="also write DIR/<id>.mp4 with the current top-3 on every frame and DIR/<id>_timeline.png",
    )
    args, cfg = parse_config(parser, argv)
    setup_logging(launch_rank())
    with (
        exit_on_user_error(interrupted=f"interrupted; {args.output} may hold part of the rendered videos"),
        distributed_run(cfg, args.output),
    ):
        results, missing, k = predict_videos(
            cfg,
            args.input,
            args.output,
            args.checkpoint,
            args.pretrained,
            args.top_k,
            args.render,
            trust=args.trust_checkpoint,
            model_file=args.model,
        )
        print(format_table(results, missing, k))
        done = sum(not r.error for r in results)
        print(
            f"{done} of {len(results) + len(missing)} videos predicted, {len(results) - done} unreadable, "
            f"{len(missing)} missing -> {args.output}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
