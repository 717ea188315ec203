#!/usr/bin/env python
"""Convert torchvision / pytorchvideo / PySlowFast weights into a videoattn checkpoint.

    python tools/convert_checkpoint.py --source torchvision --input resnet50.pth \
        --config configs/kinetics400/I3D_NL_R50.yaml --output i3d_nl_r50_inflated.pyth
    python tools/convert_checkpoint.py --source pytorchvideo --input I3D_8x8_R50.pyth \
        --config configs/kinetics400/I3D_R50.yaml --output i3d_r50.pyth
    python tools/convert_checkpoint.py --source pyslowfast --input I3D_NLN_8x8_R50.pyth \
        --config configs/kinetics400/I3D_NL_R50.yaml --output i3d_nl_r50.pyth
    python tools/convert_checkpoint.py --pretrained i3d_r50 \
        --config configs/kinetics400/I3D_R50.yaml --output i3d_r50.pyth

torchvision 2D weights are inflated (``--inflation mean`` or ``centre``); their 1000-class fc is
dropped unless the config has 1000 classes. Non-local / CBAM parameters absent from the source
keep their identity-at-init values; every such key is listed. ``--pretrained NAME`` downloads
(once, verified) the public weights of that name (see videoattn/models/pretrained.py) instead of
reading ``--input``; the checkpoint then carries their class names where its head holds them.
``--output`` never replaces the input (also through a link) or any file this tool did not write.
"""

import os
import sys

from videoattn.cli import add_pretrained_argument, add_trust_argument, config_parser, exit_on_user_error, parse_config
from videoattn.config import config_to_dict
from videoattn.engine.checkpoint import make_checkpoint, save_checkpoint
from videoattn.models import build_model
from videoattn.models.convert import SOURCES, convert_file
from videoattn.models.pretrained import load_pretrained_weights
from videoattn.utils.outputs import check_not_input, claim_files
from videoattn.utils.serialization import CheckpointError
from videoattn.utils.state_dict import ConversionError


def _convert(args, model) -> tuple:
    """Load the weights into ``model``; ``(notes, meta source, extra checkpoint keys, description)``."""
    if args.pretrained:
        info = load_pretrained_weights(model, args.pretrained, inflation=args.inflation)
        extra = {"classes": info.classes} if info.classes else {}
        return info.notes, f"{info.name}:{info.sha256}", extra, f"pretrained {info.name} ({info.path})"
    notes = convert_file(args.source, args.input, model, args.inflation, trust=args.trust_checkpoint)
    return notes, f"{args.source}:{os.path.basename(args.input)}", {}, f"{args.source} {args.input}"


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument("--source", choices=SOURCES, help="where --input comes from")
    parser.add_argument("--input", help="source weights (.pth / .pyth / .pt)")
    add_pretrained_argument(parser, "instead of --source/--input: public weights by name")
    parser.add_argument("--output", required=True, help="checkpoint to write (.pyth)")
    parser.add_argument(
        "--inflation",
        default="mean",
        choices=("mean", "centre"),
        help="torchvision only: how 2D kernels fill the temporal axis",
    )
    add_trust_argument(parser)
    args, cfg = parse_config(parser, argv)
    if (args.source or args.input) if args.pretrained else not (args.source and args.input):
        sys.exit("error: give either --pretrained NAME or both --source and --input")
    model = build_model(cfg.model)
    with exit_on_user_error(distributed=False):  # offline / wrong checksum: one line
        check_not_input(args.output, [args.input] if args.input else [])
        try:
            notes, source, extra, what = _convert(args, model)
        except (ConversionError, FileNotFoundError, CheckpointError) as e:  # anything else is a bug: traceback
            sys.exit(f"conversion failed: {e}")
    ckpt = make_checkpoint(model.state_dict(), config_to_dict(cfg), source=source, conversion_notes=notes, **extra)
    with exit_on_user_error(distributed=False):  # never replace a file this tool did not write
        claim_files("convert_checkpoint", {args.output: "use another --output"})
        save_checkpoint(args.output, ckpt)
    for note in notes:
        print(f"note: {note}")
    print(
        f"wrote {args.output} ({len(ckpt['model_state'])} tensors from {what}, {len(notes)} keys left as initialised)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
