#!/usr/bin/env python
"""Export a trained model to ONNX, a torch.export program or TorchScript, with its input layout.

    python tools/export.py --config CFG (--checkpoint CKPT | --pretrained NAME) \
        --format onnx|exported-program|torchscript --output FILE [--opset N] [key=value ...]
    python tools/export.py --config configs/synthetic/I3D_NL_CBAM_R18.yaml \
        --checkpoint output/demo/checkpoints/checkpoint_best.pyth --format onnx --output demo.onnx

Input: (B, 3, T, H, W) normalised float32 clips, output (B, num_classes) logits; the batch is
dynamic, and T, H, W too unless a non-local block attends local or axial. The layout (mean, std,
frames, sampling rate, crop size, class names, dynamic dimensions, opset) is recorded in FILE.json
and, for ONNX, in the file's metadata. The exported model is checked against the eager one on two
input shapes before anything is written. ONNX needs pip install -e '.[export]'; run the file with
tools/predict.py --model FILE.onnx. See videoattn/apps/export.py.
"""

import sys

from videoattn.apps.export import DEFAULT_OPSET, FORMATS, describe, export_model
from videoattn.cli import add_checkpoint_argument, config_parser, exit_on_user_error, parse_config
from videoattn.engine.logger import setup_logging


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    add_checkpoint_argument(parser)
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--output", required=True, help="the file to write (and FILE.json next to it)")
    parser.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {DEFAULT_OPSET})")
    args, cfg = parse_config(parser, argv)
    restore_logging = setup_logging(0)
    try:
        with exit_on_user_error(distributed=False):
            result = export_model(
                cfg, args.format, args.output, args.checkpoint, args.pretrained, args.opset, trust=args.trust_checkpoint
            )
    finally:
        restore_logging()  # main() also runs in-process (tests)
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
