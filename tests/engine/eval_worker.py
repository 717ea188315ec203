"""``evaluate_clips`` on the validation loader; run plainly or under torchrun by
tests/engine/test_eval_distributed.py (not a test itself).

    eval_worker.py CFG CHECKPOINT OUT_JSON
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: videokit
from videokit import loader_for  # noqa: E402

from videoattn.config import load_config  # noqa: E402
from videoattn.data.transforms import DeviceNormalizer  # noqa: E402
from videoattn.engine.inference import build_inference_model  # noqa: E402
from videoattn.evaluation.evaluate import evaluate_clips  # noqa: E402
from videoattn.evaluation.metrics import AGGREGATIONS, VideoAggregator  # noqa: E402
from videoattn.utils.distributed import cleanup, init_distributed, is_main_process  # noqa: E402

if __name__ == "__main__":
    cfg = load_config(sys.argv[1])
    info = init_distributed("cpu")
    model = build_inference_model(cfg, sys.argv[2], info.device)
    out = evaluate_clips(model, loader_for(cfg, "val"), info.device, DeviceNormalizer(cfg.data.mean, cfg.data.std))
    # VideoAggregator across ranks: each rank feeds its half of fixed per-view logits
    g = torch.Generator().manual_seed(7)
    logits, vidx = torch.randn(37, 6, generator=g), torch.randint(0, 9, (37,), generator=g)
    mine = torch.arange(37)[info.rank :: info.world_size]
    out["aggregated"] = {}
    for method in AGGREGATIONS:
        agg = VideoAggregator(9, 6, method)
        agg.update(logits[mine], vidx[mine])
        agg.all_reduce()
        out["aggregated"][method] = agg.video_scores().nan_to_num(-1.0).tolist()
    if is_main_process():
        with open(sys.argv[3], "w") as f:
            json.dump(out, f)
    cleanup()
