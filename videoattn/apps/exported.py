"""Run an exported ONNX file where predict runs a PyTorch model (``tools/predict.py --model FILE.onnx``).

:func:`load_onnx_model` reads the file's record (what :mod:`videoattn.apps.export` stored: the ONNX
``metadata_props``, else the sidecar ``FILE.json``) and opens an onnxruntime CPU session;
:class:`OnnxModel` is a ``torch.nn.Module`` whose forward is that session, so the views, batching
and aggregation around it are predict's own (:func:`videoattn.apps.predict.predict_videos`).
:func:`apply_record` makes the config's clips what the file expects (frames, sampling rate, crop,
normalisation, number of classes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List

import torch

from videoattn.config import Config
from videoattn.utils.errors import OneLineError, UsageError

log = logging.getLogger(__name__)
REQUIRED = ("input_name", "output_name", "input_layout", "input_dims", "num_classes", "classes", "data")


class ExportedModelError(OneLineError):
    """An exported file that cannot be run: no videoattn record, another layout, or unreadable."""


def read_sidecar(path: str) -> dict:
    """The record in ``path + ".json"`` ({} if there is none)."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ExportedModelError(f"{path}.json is not a videoattn export record: {e}") from e
    return record if isinstance(record, dict) else {}


def record_from_metadata(meta: Dict[str, str]) -> dict:
    """The record stored in ONNX ``metadata_props`` (every value JSON); {} if it holds none."""
    record = {}
    for key, value in meta.items():
        try:
            record[key] = json.loads(value)
        except ValueError:
            record[key] = value
    return record if all(k in record for k in REQUIRED) else {}


def check_record(record: dict, path: str) -> dict:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ExportedModelError(
            f"{path} has no videoattn export record (ONNX metadata or {os.path.basename(path)}.json; missing "
            f"{', '.join(missing)}): export it with tools/export.py"
        )
    if record["input_layout"] != "B,C,T,H,W":
        raise ExportedModelError(f"{path} takes input layout {record['input_layout']}, not B,C,T,H,W")
    return record


class OnnxModel(torch.nn.Module):
    """``x: (B, 3, T, H, W)`` float32 -> ``(B, num_classes)`` float32 logits through onnxruntime (CPU)."""

    def __init__(self, session, record: dict):
        super().__init__()
        self.session, self.record = session, record
        self.input_name, self.output_name = record["input_name"], record["output_name"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clips = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: clips})[0])


@dataclass
class LoadedExport:
    model: OnnxModel
    record: dict
    source: str  # what predict_run.json records as the weights


def load_onnx_model(path: str, threads: int) -> LoadedExport:
    """An :class:`OnnxModel` of ``path`` with ``threads`` intra-op threads, and its record."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("onnxruntime is not installed, needed for --model: pip install -e '.[export]'") from None
    if not os.path.isfile(path):
        raise UsageError(f"--model {path}: no such file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, with long texts
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportedModelError(f"onnxruntime cannot load {path}: {first}") from e
    record = record_from_metadata(session.get_modelmeta().custom_metadata_map) or read_sidecar(path)
    record = check_record(record, path)
    return LoadedExport(OnnxModel(session, record), record, f"onnx:{os.path.abspath(path)}")


def apply_record(cfg: Config, record: dict) -> Config:
    """``cfg`` with the data keys the file was exported with (frames, sampling rate, crops,
    normalisation) and its number of classes; each key that changes is logged."""
    data = {k: v for k, v in record["data"].items() if hasattr(cfg.data, k)}
    changed: List[str] = [f"data.{k}={v}" for k, v in data.items() if getattr(cfg.data, k) != v]
    if cfg.model.num_classes != record["num_classes"]:
        changed.append(f"model.num_classes={record['num_classes']}")
    if changed:
        log.info("the exported model's input and classes replace the config's: %s", ", ".join(changed))
    model = dataclasses.replace(cfg.model, num_classes=int(record["num_classes"]))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data), model=model, device="cpu")
