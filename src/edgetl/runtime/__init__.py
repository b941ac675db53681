"""The device runtime: reads a bundle, preprocesses, predicts.

numpy + onnxruntime + Pillow only. It must never import torch (a test
imports it in a fresh interpreter and checks ``sys.modules``)."""

from ..data.input_spec import InputSpec
from .bundle import Bundle, read_bundle
from .personalize import Personalizer
from .predictor import Prediction, Predictor

__all__ = ["Bundle", "InputSpec", "Personalizer", "Prediction", "Predictor", "read_bundle"]
