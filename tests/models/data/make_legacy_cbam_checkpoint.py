"""Write legacy_cbam_i3d_r18.pyth and legacy_cbam_logits.pt with the code of main at c625c65 (the
CBAM form before model.cbam.variant existed); tests/models/test_cbam_checkpoints.py loads them.

    git worktree add /tmp/old21c c625c65
    cd /tmp/old21c && PYTHONPATH=$PWD python /path/to/this/file OUT_DIR

A tiny I3D_NL_CBAM_R18 (base_channels 2 to stay under 200 KB, 3 classes), seed 0, its zero-
initialised BN scales drawn from N(1, 0.3) and its BN statistics randomised (else every residual
branch, CBAM included, would be multiplied by 0 and the logits would not depend on CBAM), saved
as training saves it (make_checkpoint / save_checkpoint with config_to_dict of the run's config),
and its eval-mode logits on a seeded input.
"""

import os
import sys

import torch

from videoattn.config import config_to_dict, load_config
from videoattn.engine.checkpoint import make_checkpoint, save_checkpoint
from videoattn.engine.device import for_device
from videoattn.models import build_model

OVERRIDES = ["model.preset=I3D_NL_CBAM_R18", "model.base_channels=2", "model.num_classes=3", "model.dropout=0.0"]
INPUT_SHAPE = (2, 3, 8, 32, 32)


def main(out_dir: str) -> None:
    cfg = for_device(load_config(None, OVERRIDES), torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and float(p.abs().sum()) == 0 and "weight" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    model.eval()
    clip = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(clip)
    save_checkpoint(
        os.path.join(out_dir, "legacy_cbam_i3d_r18.pyth"), make_checkpoint(model.state_dict(), config_to_dict(cfg))
    )
    torch.save(
        {"input_shape": INPUT_SHAPE, "input_seed": 0, "logits": logits}, os.path.join(out_dir, "legacy_cbam_logits.pt")
    )
    print(logits)


if __name__ == "__main__":
    main(sys.argv[1])
