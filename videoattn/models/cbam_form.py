"""Which CBAM form a checkpoint holds, and the one-line refusal to load it into another form.

A checkpoint records its form in its config (``config.model.cbam.variant / order / gates``, saved
by training). A config with a ``model.cbam`` section but no ``variant`` was written before the key
existed: its CBAM is the ``legacy`` form. Without a usable record (no config, or unset keys) the
form is read from the tensors: the spatial BN exists only in ``official``, the MLP biases
everywhere but ``article``, and the gates by their keys (``order`` leaves no trace there).
Every load path calls :func:`check_cbam_form` before it touches the model: the inference tools
(:func:`videoattn.engine.inference.load_weights`), fine-tuning
(:func:`videoattn.engine.checkpoint.load_pretrained`) and resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from torch import nn

from videoattn.models.cbam import CBAM, CBAMForm
from videoattn.utils.serialization import CheckpointError


@dataclass(frozen=True)
class RecordedForm:
    """A checkpoint's CBAM form and how it is known (words for the message)."""

    form: CBAMForm
    how: str
    order_known: bool = True  # False when read from the tensors


@dataclass(frozen=True)
class _Keys:
    """What the tensors of a CBAM say: which gates exist, MLP biases, spatial BN."""

    channel: bool
    bias: bool
    spatial: bool
    bn: bool

    @classmethod
    def of(cls, keys) -> "_Keys":
        keys = [k for k in keys if ".cbam." in k]
        return cls(
            channel=any(".cbam.channel." in k for k in keys),
            bias=any(".cbam.channel.mlp.0.bias" in k for k in keys),
            spatial=any(".cbam.spatial." in k for k in keys),
            bn=any(".cbam.spatial.bn." in k for k in keys),
        )

    def form(self) -> CBAMForm:
        gates = "both" if self.channel and self.spatial else ("channel" if self.channel else "spatial")
        variant = "official" if self.bn else ("legacy" if self.bias else "article")
        return CBAMForm(variant=variant, gates=gates)


def model_cbam_form(model: nn.Module) -> Optional[CBAMForm]:
    """The form of ``model``'s CBAM blocks (all share one), or None if it has none."""
    return next((m.form for m in model.modules() if isinstance(m, CBAM)), None)


def recorded_cbam_form(config: object, state: Mapping[str, object]) -> Optional[RecordedForm]:
    """The CBAM form of a checkpoint with ``config`` (its saved config dict, or None) and weights
    ``state``; None if ``state`` holds no CBAM tensors."""
    keys = _Keys.of(state)
    if not (keys.channel or keys.spatial):
        return None
    model = config.get("model") if isinstance(config, dict) else None
    cbam = model.get("cbam") if isinstance(model, dict) else None
    if isinstance(cbam, dict) and "variant" not in cbam:
        return RecordedForm(CBAMForm("legacy"), "written before model.cbam.variant existed")
    if isinstance(cbam, dict) and all(isinstance(cbam.get(k), str) for k in ("variant", "order", "gates")):
        return RecordedForm(CBAMForm(cbam["variant"], cbam["order"], cbam["gates"]), "recorded in its config")
    return RecordedForm(keys.form(), "read from its tensors; its config does not record model.cbam", False)


def check_cbam_form(model: nn.Module, ckpt: Mapping[str, object], state: Mapping[str, object], src: str) -> None:
    """Raise a one-line :class:`CheckpointError` if the checkpoint ``ckpt`` (weights ``state``, file
    ``src``) holds another CBAM form than ``model``, naming the override that fits the file.

    Nothing to check when either side has no CBAM (the key check names missing blocks)."""
    own = model_cbam_form(model)
    recorded = recorded_cbam_form(ckpt.get("config"), state)
    if own is None or recorded is None:
        return
    theirs = recorded.form
    if recorded.order_known:
        differ = {k: v for k, v in theirs.key_values().items() if own.key_values().get(k) != v}
    elif _Keys.of(state) != _Keys.of(model.state_dict()):
        differ = {k: v for k, v in theirs.key_values().items() if k != "order" and own.key_values()[k] != v}
    else:
        return
    if differ:
        overrides = " ".join(f"model.cbam.{k}={v}" for k, v in differ.items())
        raise CheckpointError(
            f"{src} holds CBAM form {theirs.describe()} ({recorded.how}); this model is {own.describe()}: "
            f"add {overrides}"
        )
