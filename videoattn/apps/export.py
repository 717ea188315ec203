"""Export a trained model for inference outside videoattn (what ``tools/export.py`` runs).

Formats (``--format``):

* ``onnx``: ``torch.export`` then ``torch.onnx.export(dynamo=True)`` (the exporter torch 2.14
  recommends and runs by default; the TorchScript-based one is deprecated), opset ``--opset``
  (default :data:`DEFAULT_OPSET`); runs in onnxruntime (``tools/predict.py --model FILE.onnx``);
* ``exported-program``: the ``torch.export`` program (``torch.export.save``, load with
  ``torch.export.load(FILE).module()``), the same graph the ONNX file is translated from;
* ``torchscript``: ``torch.jit.trace`` (deprecated by torch 2.14, kept for runtimes that only
  read TorchScript; load with ``torch.jit.load``).

The model is exported in eval mode in float32 (dropout off, BatchNorm and the non-local block's
folded inference path): ``x: (B, 3, T, H, W)`` normalised clips -> ``(B, num_classes)`` logits (no
softmax). Which dimensions are dynamic (:func:`dynamic_dims`): the batch always; T, H and W too
unless a non-local block attends ``local`` or ``axial``, whose window and line layouts are
computed from the map size in Python, so such a file is fixed to the config's
``data.num_frames`` x ``data.test_crop_size``. What a client needs to feed it (layout,
normalisation, frames, sampling rate, crop size, class names, the dynamic dimensions, the opset)
is one record (:func:`export_record`): in the ONNX file's ``metadata_props`` (one key per field,
values JSON), inside the exported-program / TorchScript archive (``extra_files``
``videoattn.json``), and in the sidecar ``FILE.json``. Before anything is written, the exported
model is run on the export example and on a second shape that differs in every dynamic
dimension, and compared with the eager model (:func:`check_export`).

Files are written atomically; a file (or sidecar) of that name that this tool did not write is
never replaced (:mod:`videoattn.utils.outputs`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

import videoattn
from videoattn.config import Config
from videoattn.engine.device import expand_preset
from videoattn.engine.inference import class_names_for
from videoattn.engine.session import one_process_session
from videoattn.models.nonlocal_block import NonLocal3d
from videoattn.models.resnet3d import TEMPORAL_PATTERNS
from videoattn.utils.errors import OneLineError, UsageError
from videoattn.utils.io import atomic_write_bytes, atomic_write_json, json_safe
from videoattn.utils.outputs import check_not_input, claim_files

log = logging.getLogger(__name__)
FORMATS = ("onnx", "exported-program", "torchscript")
INPUT_NAME, OUTPUT_NAME, LAYOUT = "clips", "logits", "B,C,T,H,W"
EXTRA_FILE = "videoattn.json"  # the record inside exported-program / TorchScript archives
# torch 2.14's dynamo exporter translates with opset 18 operators and converts up to 23; its default is 20.
DEFAULT_OPSET, OPSETS = 20, range(18, 24)
MIN_SIZE = 32  # H, W: the stride-32 network keeps one res5 cell down to here
EXAMPLE_SIZE = 64  # H, W of the trace example: every stage keeps >= 2 cells, so none is fixed to 1
# An export that differs from eager by more than this (relative to the logits' scale) is refused;
# float32 exporters reorder sums, which moves logits by ~1e-6 of their scale, not 1e-3.
MAX_RELATIVE_DIFF = 1e-3
STATIC_KINDS = {
    "local": "local attention cuts its windows from the map size in Python",
    "axial": "axial attention reshapes its lines by the key-grid size, which torch.export fixes",
}


class ExportError(OneLineError):
    """The exporter failed, or the exported model does not compute what the eager model does."""


@dataclass
class DimSpec:
    """One dimension of the input: ``size`` (of the export example) or a range when dynamic."""

    name: str
    axis: int
    size: int
    dynamic: bool
    min: Optional[int] = None  # dynamic only; no max


@dataclass
class ExportRecord:
    """What the exported file expects and returns (stored with the file; see the module doc)."""

    format: str
    exporter: str
    input_name: str
    input_layout: str
    input_dims: List[DimSpec]
    static_reason: str  # why T/H/W are fixed ("" when they are dynamic)
    input_pixels: str  # how pixels become the input
    mean: List[float]
    std: List[float]
    num_frames: int
    sampling_rate: int
    target_fps: float
    crop_size: int
    data: Dict[str, object]  # the data.* keys that make the test views (predict applies them)
    output_name: str
    num_classes: int
    classes: List[str]
    model: Dict[str, object]  # model.* as resolved (preset expanded)
    weights: str
    opset: Optional[int] = None
    torch_version: str = torch.__version__
    videoattn_version: str = videoattn.__version__
    check: Dict[str, object] = field(default_factory=dict)  # filled by check_export

    def to_dict(self) -> dict:
        return json_safe(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------------- shapes
def dynamic_dims(model: torch.nn.Module, cfg: Config) -> List[DimSpec]:
    """``(B, C, T, H, W)`` of ``model``'s input: batch dynamic; T, H, W dynamic unless a non-local
    block attends ``local`` / ``axial`` (:data:`STATIC_KINDS`), else the config's clip size."""
    static = _static_reason(model)
    frames, crop = int(cfg.data.num_frames), int(cfg.data.test_crop_size)
    pool = int(TEMPORAL_PATTERNS[expand_preset(cfg).model.temporal]["pool1"])
    dims = [DimSpec("batch", 0, 2, True, 1), DimSpec("channels", 1, 3, False)]
    if static:
        fixed = (("time", 2, frames), ("height", 3, crop), ("width", 4, crop))
        return dims + [DimSpec(name, axis, size, False) for name, axis, size in fixed]
    # the example keeps >= 2 cells on every axis after every stride; below that torch.export would fix a size to 1
    return dims + [
        DimSpec("time", 2, max(frames, 2 * pool), True, 2 * pool),
        DimSpec("height", 3, max(crop, EXAMPLE_SIZE), True, MIN_SIZE),
        DimSpec("width", 4, max(crop, EXAMPLE_SIZE), True, MIN_SIZE),
    ]


def _static_reason(model: torch.nn.Module) -> str:
    kinds = sorted({m.kind for m in model.modules() if isinstance(m, NonLocal3d) and m.kind in STATIC_KINDS})
    return "; ".join(f"{STATIC_KINDS[k]} (model.non_local.attention={k})" for k in kinds)


def probe_shape(dims: Sequence[DimSpec]) -> List[int]:
    """A second input shape that differs from the example in every dynamic dimension (its minimum,
    the width a little wider than the height so that H and W cannot be swapped unseen)."""
    shape = [d.min if d.dynamic else d.size for d in dims]
    if dims[4].dynamic:
        shape[4] += 16
    return shape


# ------------------------------------------------------------------------------------- exporters
def trace_program(model: torch.nn.Module, example: torch.Tensor, dims: Sequence[DimSpec]):
    """``torch.export.export`` of ``model`` with ``dims``' dynamic dimensions.

    Size-oblivious tracing (``backed_size_oblivious``): sizes are not specialised on being 1, so
    maps that shrink to one cell (a 32-pixel input at res5) run through the same graph.
    """
    from torch.export import Dim
    from torch.fx.experimental import _config as fx_config

    spec = {d.axis: Dim(d.name, min=d.min) for d in dims if d.dynamic}
    try:
        with fx_config.patch(backed_size_oblivious=True), torch.no_grad():
            return torch.export.export(model, (example,), dynamic_shapes={"x": spec})
    except Exception as e:  # torch's errors run to pages: keep the first line
        raise ExportError(f"torch.export failed: {type(e).__name__}: {_first_line(e)}") from e


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def onnx_proto(program, example: torch.Tensor, opset: int):
    """The ``onnx.ModelProto`` of an exported program (``torch.onnx.export(dynamo=True)``)."""
    _require("onnxscript", "export to ONNX")
    try:
        onnx_program = torch.onnx.export(
            program,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {_first_line(e)}") from e
    return onnx_program.model_proto


def trace_torchscript(model: torch.nn.Module, example: torch.Tensor):
    """``torch.jit.trace`` (its deprecation and tracer warnings silenced: the check below runs it)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, example, check_trace=False)


def _require(module: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UsageError(f"{module} is not installed, needed to {what}: pip install -e '.[export]'") from None


# ---------------------------------------------------------------------------------------- checks
def check_export(eager: torch.nn.Module, run: Callable[[torch.Tensor], torch.Tensor], shapes) -> Dict[str, object]:
    """Run ``run`` (the exported model) and ``eager`` on a random input of every shape in ``shapes``;
    ``{"shapes", "max_abs_diff", "logit_scale"}``; :class:`ExportError` if they differ by more than
    :data:`MAX_RELATIVE_DIFF` of the logits' scale (or an exported model fails on a shape)."""
    gen = torch.Generator().manual_seed(0)
    worst, scale = 0.0, 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            ref = eager(x)
            try:
                got = run(x)
            except Exception as e:
                raise ExportError(f"the exported model fails on input {list(shape)}: {_first_line(e)}") from e
        worst, scale = max(worst, float((got - ref).abs().max())), max(scale, float(ref.abs().max()))
    if not worst <= MAX_RELATIVE_DIFF * max(scale, 1.0):  # NaN fails too
        raise ExportError(f"the exported model differs from eager by {worst:.3g} (logits up to {scale:.3g})")
    return {"shapes": [list(s) for s in shapes], "max_abs_diff": worst, "logit_scale": scale}


def onnx_runner(proto, threads: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> logits`` through onnxruntime's CPU provider for an in-memory ``proto``."""
    _require("onnxruntime", "check the ONNX file")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.contiguous().numpy()})[0])


# ---------------------------------------------------------------------------------------- record
def export_record(cfg: Config, fmt: str, dims: List[DimSpec], names: List[str], weights: str, static: str):
    """The :class:`ExportRecord` of a model built from ``cfg`` (before the exporter runs)."""
    d = cfg.data
    exporter = {
        "onnx": f"torch.export + torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "exported-program": f"torch.export, torch {torch.__version__}",
        "torchscript": f"torch.jit.trace, torch {torch.__version__}",
    }[fmt]
    keys = ("num_frames", "sampling_rate", "target_fps", "protocol", "train_jitter_scales", "train_crop_size")
    return ExportRecord(
        format=fmt,
        exporter=exporter,
        input_name=INPUT_NAME,
        input_layout=LAYOUT,
        input_dims=dims,
        static_reason=static,
        input_pixels="RGB frames, values / 255, then (x - mean) / std per channel; float32",
        mean=list(d.mean),
        std=list(d.std),
        num_frames=int(d.num_frames),
        sampling_rate=int(d.sampling_rate),
        target_fps=float(d.target_fps),
        crop_size=int(d.test_crop_size),
        data={k: getattr(d, k) for k in keys + ("test_crop_size", "mean", "std")},
        output_name=OUTPUT_NAME,
        num_classes=int(cfg.model.num_classes),
        classes=list(names),
        model=dataclasses.asdict(expand_preset(cfg).model),
        weights=weights,
        opset=None,
    )


def sidecar_path(path: str) -> str:
    """``FILE.json`` next to the exported ``FILE``."""
    return path + ".json"


def onnx_bytes(proto, record: dict) -> bytes:
    """``proto`` with every field of ``record`` in its ``metadata_props`` (values as JSON)."""
    del proto.metadata_props[:]
    for key, value in record.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


# ------------------------------------------------------------------------------------------- run
@dataclass
class ExportResult:
    path: str
    sidecar: str
    record: dict
    num_bytes: int
    program: Optional[object] = None  # the torch.export program (onnx, exported-program), not saved


def _check_args(fmt: str, opset: Optional[int], output: str) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if opset is not None and fmt != "onnx":
        raise UsageError("--opset is for --format onnx only")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset not in OPSETS:
        raise UsageError(f"--opset {opset}: torch {torch.__version__} exports opsets {OPSETS[0]}..{OPSETS[-1]}")
    if os.path.isdir(output):
        raise UsageError(f"--output {output} is a folder; give a file name")
    if fmt == "onnx":
        _require("onnx", "export to ONNX")
        _require("onnxscript", "export to ONNX")
        _require("onnxruntime", "check the ONNX file")
    return opset


def export_model(
    cfg: Config,
    fmt: str,
    output: str,
    checkpoint_path: Optional[str] = None,
    pretrained: str = "",
    opset: Optional[int] = None,
    trust: bool = False,
) -> ExportResult:
    """Export the model of ``cfg`` with the weights :func:`videoattn.engine.inference.resolve_weights`
    picks to ``output`` (and ``output.json``) in format ``fmt``; see the module doc."""
    opset = _check_args(fmt, opset, output)
    sidecar = sidecar_path(output)
    check_not_input(output, [checkpoint_path] if checkpoint_path else [])
    claim_files("export", {output: "use another --output", sidecar: "use another --output"})
    cpu = dataclasses.replace(cfg, device="cpu", model=dataclasses.replace(cfg.model, channels_last=False))
    with one_process_session(cpu, precision=None) as session:  # the file: float32, NCDHW, whatever runs it
        model, weights = session.load_model(checkpoint_path, trust=trust, pretrained=pretrained)
    names = class_names_for(cfg.data, cfg.model.num_classes, weights.classes)
    exported = export_module(model, cfg, fmt, opset, weights.source, names)
    atomic_write_bytes(output, exported.data)
    atomic_write_json(sidecar, exported.record)
    return ExportResult(output, sidecar, exported.record, len(exported.data), exported.program)


@dataclass
class Exported:
    data: bytes  # the file, with the record inside
    record: dict
    program: Optional[object]  # the torch.export program (onnx, exported-program), or None


def export_module(model: torch.nn.Module, cfg: Config, fmt: str, opset: int, weights: str, names: List[str]):
    """:class:`Exported` of ``model`` (built from ``cfg``) in ``fmt``, checked (:func:`check_export`)."""
    model = model.float().eval()._apply(lambda t: t.contiguous())  # plain layout (channels_last is a GPU choice)
    dims = dynamic_dims(model, cfg)
    record = export_record(cfg, fmt, dims, names, weights, _static_reason(model))
    data, program = _exported_bytes(fmt, model, dims, record, opset)
    return Exported(data, record.to_dict(), program)


def _exported_bytes(fmt: str, model: torch.nn.Module, dims: List[DimSpec], record: ExportRecord, opset: int):
    """Export ``model`` in ``fmt`` and check it (:func:`check_export`, into ``record.check``):
    ``(the file's bytes with record inside, the torch.export program or None)``."""
    example = torch.randn(*[d.size for d in dims], generator=torch.Generator().manual_seed(0))
    shapes = [list(example.shape), probe_shape(dims)]
    if fmt == "torchscript":
        traced = trace_torchscript(model, example)
        record.check = check_export(model, traced, shapes)
        return _archive(lambda f: torch.jit.save(traced, f, _extra_files={EXTRA_FILE: _dumps(record)})), None
    program = trace_program(model, example, dims)
    if fmt == "exported-program":
        record.check = check_export(model, program.module(), shapes)
        return _archive(lambda f: torch.export.save(program, f, extra_files={EXTRA_FILE: _dumps(record)})), program
    proto = onnx_proto(program, example, opset)
    record.opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    record.check = check_export(model, onnx_runner(proto, torch.get_num_threads()), shapes)
    return onnx_bytes(proto, record.to_dict()), program


def _archive(save: Callable[[io.BytesIO], None]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit.save's deprecation: the module doc says it
        warnings.simplefilter("ignore", FutureWarning)
        save(buf)
    return buf.getvalue()


def _dumps(record: ExportRecord) -> str:
    return json.dumps(record.to_dict())


def describe(result: ExportResult) -> str:
    """The tool's closing line: what was written, which dimensions are dynamic, the check."""
    r = result.record
    dims = ", ".join(f"{d['name']} >= {d['min']}" for d in r["input_dims"] if d["dynamic"])
    fixed = "x".join(str(d["size"]) for d in r["input_dims"][2:] if not d["dynamic"])
    shape = f"dynamic {dims}" + (f"; T x H x W fixed at {fixed} ({r['static_reason']})" if fixed else "")
    opset = f", opset {r['opset']}" if r["opset"] else ""
    check = r["check"]
    return (
        f"wrote {result.path} ({r['format']}{opset}, {result.num_bytes / 2**20:.1f} MiB) and {result.sidecar}: "
        f"input {r['input_name']} {r['input_layout']}, {shape}; max |exported - eager| "
        f"{check['max_abs_diff']:.2g} on {' and '.join('x'.join(map(str, s)) for s in check['shapes'])}"
    )
