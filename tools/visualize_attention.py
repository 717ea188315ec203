#!/usr/bin/env python
"""Attention pictures of one video: CBAM spatial maps, the non-local attention of a query point and
the channel view of one CBAM block (fig.channels.png), with fig.json (prediction, faithfulness).

    python tools/visualize_attention.py --config CFG (--checkpoint PATH | --pretrained NAME) \
        --video VIDEO --output fig.png \
        [--query FRAME Y X] [--cbam-layer res3] [--nl-layer res3] [--gif fig.gif] \
        [--channel-layer res3] [--top-channels 4] [--random-draws 20] [key=value ...]

FRAME is an input-frame index (0..num_frames-1); Y and X are fractions of the crop in [0, 1].
See videoattn/apps/visualize.py and videoattn/apps/channel_view.py.
"""

import sys

from videoattn.apps.visualize import ChannelOptions, visualize_video
from videoattn.cli import add_checkpoint_argument, config_parser, exit_on_user_error, parse_config


def main(argv=None) -> int:
    parser = config_parser("CBAM and non-local attention pictures of one video clip.")
    add_checkpoint_argument(parser)
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--output", required=True, help="PNG (or .pdf/.svg) to write")
    parser.add_argument(
        "--query",
        nargs=3,
        type=float,
        metavar=("FRAME", "Y", "X"),
        default=None,
        help="non-local query point (default: centre of the middle frame)",
    )
    parser.add_argument("--cbam-layer", default="res3", help="stage (res2..res5, last block) or key like res3.1.cbam")
    parser.add_argument("--nl-layer", default="res3", help="stage (last non-local block) or key like res4.1.nonlocal")
    parser.add_argument(
        "--start", type=float, default=None, help="clip start in seconds (default: the protocol's single test view)"
    )
    parser.add_argument("--gif", default="", help="also write an animated GIF here")
    parser.add_argument("--max-columns", type=int, default=8, help="frames shown in the grid")
    parser.add_argument("--channel-layer", default="", help="CBAM block of the channel view (default: --cbam-layer)")
    parser.add_argument("--top-channels", type=int, default=4, help="k emphasised channels shown and zeroed")
    parser.add_argument(
        "--random-draws", type=int, default=20, help="random k-channel sets zeroed for the faithfulness baseline"
    )
    args, cfg = parse_config(parser, argv)
    query = (int(args.query[0]), args.query[1], args.query[2]) if args.query else None
    with exit_on_user_error(distributed=False):
        out = visualize_video(
            cfg,
            args.checkpoint,
            args.video,
            args.output,
            query,
            args.cbam_layer,
            args.nl_layer,
            args.gif or None,
            args.start,
            args.max_columns,
            trust=args.trust_checkpoint,
            pretrained=args.pretrained,
            channels=ChannelOptions(args.channel_layer, args.top_channels, args.random_draws),
        )
    if out.note:
        print(out.note)
    print("wrote " + ", ".join(out.written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
