#!/usr/bin/env python
"""Convert torchvision / pytorchvideo / PySlowFast weights into a videoattn checkpoint.

    python tools/convert_checkpoint.py --source torchvision --input resnet50.pth \
        --config configs/kinetics400/I3D_NL_R50.yaml --output i3d_nl_r50_inflated.pyth
    python tools/convert_checkpoint.py --source pytorchvideo --input I3D_8x8_R50.pyth \
        --config configs/kinetics400/I3D_R50.yaml --output i3d_r50.pyth
    python tools/convert_checkpoint.py --source pyslowfast --input I3D_NLN_8x8_R50.pyth \
        --config configs/kinetics400/I3D_NL_R50.yaml --output i3d_nl_r50.pyth

torchvision 2D weights are inflated (``--inflation mean`` or ``centre``); their 1000-class fc is
dropped unless the config has 1000 classes. Non-local / CBAM parameters absent from the source
keep their identity-at-init values; every such key is listed.
"""
import os
import sys

from videoattn.config import config_to_dict
from videoattn.cli import add_trust_argument, config_parser, parse_config
from videoattn.engine.checkpoint import make_checkpoint, save_checkpoint
from videoattn.models import build_model
from videoattn.models.convert import SOURCES, convert_file
from videoattn.utils.serialization import CheckpointError


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--input", required=True, help="source weights (.pth / .pyth / .pt)")
    parser.add_argument("--output", required=True, help="checkpoint to write (.pyth)")
    parser.add_argument("--inflation", default="mean", choices=("mean", "centre"),
                        help="torchvision only: how 2D kernels fill the temporal axis")
    add_trust_argument(parser)
    args, cfg = parse_config(parser, argv)
    model = build_model(cfg.model)
    try:
        notes = convert_file(args.source, args.input, model, args.inflation, trust=args.trust_checkpoint)
    except (ValueError, KeyError, FileNotFoundError, CheckpointError) as e:
        sys.exit(f"conversion failed: {e}")
    ckpt = make_checkpoint(model.state_dict(), config_to_dict(cfg), source=f"{args.source}:{os.path.basename(args.input)}",
                           conversion_notes=notes)
    save_checkpoint(args.output, ckpt)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.output} ({len(ckpt['model_state'])} tensors from {args.source} {args.input}, "
          f"{len(notes)} keys left as initialised)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
