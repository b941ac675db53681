"""From a trained bundle to other things: the backbone's ONNX graph
(``backbone_onnx``), the classifier and on-device training graphs built at
training time (``graph_ops``, ``fuse``, ``train_step``), and the export
formats ``edgetl export --format`` offers (one module each, registered in
``registry``; ``onnx_torch`` runs a bundle's graph in torch for the
converters).

    from edgetl.export import FORMATS, export_model
    record = export_model("run", "tflite", int8=True)   # FORMATS: name -> export function
"""

from __future__ import annotations

from .registry import FORMATS, export_model, register_format

# Each module registers its format; their order is the order --format lists them.
from . import onnx_bundle, tflite, coreml, ort_mobile, web  # noqa: E402,F401  isort: skip

__all__ = ["FORMATS", "export_model", "register_format"]
