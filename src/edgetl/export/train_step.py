"""``train_step.onnx``: one gradient-descent step of the softmax head, as a
plain ONNX graph any ONNX Runtime build runs (no training package).

Interface (fixed; apps on Android/iOS/web call it by these names):

    inputs   weight (float32, C x D), bias (float32, C),
             features (float32, N x D, raw output of features.onnx),
             labels (int64, N), learning_rate (float32 scalar), l2 (float32 scalar)
    outputs  weight_out, bias_out (the parameters after one step), loss

    z    = (features - mean) / scale            (constants of the bundle)
    p    = softmax(z @ weight.T + bias)
    loss = mean_i(-log p[i, labels[i]]) + l2/2 * ||weight||^2
    g    = (p - onehot(labels)) / N
    weight_out = weight - learning_rate * (g.T @ z + l2 * weight)
    bias_out   = bias   - learning_rate * sum_i g[i]

The loss is reported at the parameters going in. C is a symbolic dimension:
the device adds classes by growing ``weight`` and ``bias``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
INPUTS = ("weight", "bias", "features", "labels", "learning_rate", "l2")
OUTPUTS = ("weight_out", "bias_out", "loss")


def build_train_step(mean: np.ndarray, scale: np.ndarray) -> onnx.ModelProto:
    """The step graph for features of dimension ``len(mean)``, standardised
    inside the graph with the bundle's ``mean`` and ``scale``."""
    mean = np.asarray(mean, np.float32)
    scale = np.asarray(scale, np.float32)
    d = int(mean.shape[0])
    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("weight", f32, ["classes", d]),
        helper.make_tensor_value_info("bias", f32, ["classes"]),
        helper.make_tensor_value_info("features", f32, ["batch", d]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("learning_rate", f32, []),
        helper.make_tensor_value_info("l2", f32, []),
    ]
    outputs = [
        helper.make_tensor_value_info("weight_out", f32, ["classes", d]),
        helper.make_tensor_value_info("bias_out", f32, ["classes"]),
        helper.make_tensor_value_info("loss", f32, []),
    ]
    consts = [
        numpy_helper.from_array(mean, "feature_mean"),
        numpy_helper.from_array(scale, "feature_scale"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onehot_values"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    n = helper.make_node
    nodes = [
        n("Sub", ["features", "feature_mean"], ["centred"]),
        n("Div", ["centred", "feature_scale"], ["z"]),
        n("Gemm", ["z", "weight", "bias"], ["logits"], transB=1),
        n("LogSoftmax", ["logits"], ["log_p"], axis=1),
        n("Exp", ["log_p"], ["p"]),
        # onehot(labels, C): C read from the weight's shape.
        n("Shape", ["weight"], ["num_classes"], start=0, end=1),
        n("OneHot", ["labels", "num_classes", "onehot_values"], ["onehot"], axis=-1),
        n("Shape", ["features"], ["batch_shape"], start=0, end=1),
        n("Cast", ["batch_shape"], ["batch_f"], to=f32),
        n("Squeeze", ["batch_f", "axis0"], ["batch_n"]),
        # loss = -sum(onehot * log_p) / N + l2/2 ||W||^2
        n("Mul", ["onehot", "log_p"], ["picked"]),
        n("ReduceSum", ["picked"], ["picked_sum"], keepdims=0),
        n("Div", ["picked_sum", "batch_n"], ["neg_ce"]),
        n("Neg", ["neg_ce"], ["ce"]),
        n("Mul", ["weight", "weight"], ["w_sq"]),
        n("ReduceSum", ["w_sq"], ["w_sq_sum"], keepdims=0),
        n("Mul", ["l2", "half"], ["half_l2"]),
        n("Mul", ["half_l2", "w_sq_sum"], ["reg"]),
        n("Add", ["ce", "reg"], ["loss"]),
        # gradients
        n("Sub", ["p", "onehot"], ["residual"]),
        n("Div", ["residual", "batch_n"], ["g"]),
        n("Gemm", ["g", "z"], ["grad_w_data"], transA=1),
        n("Mul", ["l2", "weight"], ["grad_w_reg"]),
        n("Add", ["grad_w_data", "grad_w_reg"], ["grad_w"]),
        n("ReduceSum", ["g", "axis0"], ["grad_b"], keepdims=0),
        # plain gradient descent
        n("Mul", ["learning_rate", "grad_w"], ["step_w"]),
        n("Sub", ["weight", "step_w"], ["weight_out"]),
        n("Mul", ["learning_rate", "grad_b"], ["step_b"]),
        n("Sub", ["bias", "step_b"], ["bias_out"]),
    ]
    graph = helper.make_graph(nodes, "edgetl_softmax_head_train_step", inputs, outputs, initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgetl")
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10, mobile builds included
    onnx.checker.check_model(model, full_check=True)
    return model
