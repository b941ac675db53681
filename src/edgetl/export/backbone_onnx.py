"""Export a frozen backbone to ONNX once per (backbone, weights, InputSpec)
and keep it in the cache. Feature extraction, ``edgetl imagenet`` and the
exported bundle all run this one file, so the host sees what the phone sees."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass

from ..data.input_spec import InputSpec

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the exported graph changes
INPUT_NAME = "input"
FEATURES_NAME = "features"
LOGITS_NAME = "logits"


def default_cache_dir() -> str:
    return os.environ.get("EDGETL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgetl"
    )


@dataclass(frozen=True)
class BackboneGraph:
    """An exported backbone: where it is and what identifies it."""

    backbone: str
    weights_id: str
    input_spec: InputSpec
    onnx_path: str
    has_logits: bool

    @property
    def key(self) -> str:
        """Identity of the features this graph produces (keys the cache)."""
        raw = json.dumps(
            {"backbone": self.backbone, "weights": self.weights_id, "spec": self.input_spec.to_json(),
             "tap": "final", "v": EXPORT_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


class _Exportable:
    """Wraps the backbone so the graph has named features (+ logits) outputs."""

    @staticmethod
    def build(model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                f = self.m.forward_features(x)
                if self.m.num_classes:
                    return f, self.m.forward_head(f)
                return (f,)

        return Wrapper(model).eval()


def export_backbone(
    backbone: str, weights="default", input_spec: InputSpec | None = None, cache_dir: str | None = None
) -> BackboneGraph:
    """The cached ONNX graph of ``backbone``; exported on first use."""
    from ..zoo import get_spec, resolve_weights

    spec = get_spec(backbone)
    input_spec = input_spec or spec.input_spec
    _, weights_id = resolve_weights(backbone, weights)
    probe = BackboneGraph(backbone, weights_id, input_spec, "", False)
    folder = os.path.join(cache_dir or default_cache_dir(), "models")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{backbone}-{probe.key}.onnx")
    if os.path.isfile(path):
        import onnx

        outputs = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
        return BackboneGraph(backbone, weights_id, input_spec, path, LOGITS_NAME in outputs)

    import torch

    from ..zoo import create_backbone

    model = create_backbone(backbone, weights=weights)
    if input_spec.channels == "L":
        from ..zoo.grayscale import fold_to_grayscale

        fold_to_grayscale(model, spec.stem_conv, spec.input_spec, input_spec)
    wrapper = _Exportable.build(model)
    has_logits = bool(model.num_classes)
    example = torch.zeros(2, input_spec.num_channels, input_spec.image_size, input_spec.image_size)
    outputs = [FEATURES_NAME, LOGITS_NAME] if has_logits else [FEATURES_NAME]
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    log.info("exporting %s at %d px to ONNX (once; cached in %s)", backbone, input_spec.image_size, folder)
    # The exporter narrates every pass; keep the user's log readable.
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull:
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(devnull):
                torch.onnx.export(
                    wrapper,
                    (example,),
                    tmp,
                    input_names=[INPUT_NAME],
                    output_names=outputs,
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                    verbose=False,
                )
        os.replace(tmp, path)
    finally:
        for q, lvl in zip(quiet, levels):
            q.setLevel(lvl)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return BackboneGraph(backbone, weights_id, input_spec, path, has_logits)
