#!/usr/bin/env python
"""Print a model's parameter count and FLOPs (multiply-adds, fvcore convention) for a config.

    python tools/model_info.py --config configs/kinetics400/I3D_NL_R50.yaml
    python tools/model_info.py --config configs/synthetic/I3D_NL_CBAM_R18.yaml data.num_frames=16

The clip is (1, 3, data.num_frames, data.train_crop_size, data.train_crop_size).
"""

import sys

from videoattn.cli import config_parser, parse_config
from videoattn.models import build_model
from videoattn.models.info import model_summary


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    args, cfg = parse_config(parser, argv)
    model = build_model(cfg.model)
    crop = cfg.data.train_crop_size
    info = model_summary(model, (1, 3, cfg.data.num_frames, crop, crop))
    name = cfg.model.preset or f"R{cfg.model.depth} {cfg.model.temporal}"
    print(
        f"model:   {name} (depth {cfg.model.depth}, base_channels {cfg.model.base_channels}, "
        f"{cfg.model.num_classes} classes)"
    )
    print(f"params:  {info['params']:,} ({info['params'] / 1e6:.1f}M)")
    print(f"FLOPs:   {info['flops'] / 1e9:.2f} G multiply-adds per clip {'x'.join(map(str, info['input_shape'][2:]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
