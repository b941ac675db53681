"""Memory-lean backward through frozen layers (the TinyTL observation).

When only biases (or nothing) of a layer train, its backward pass does not
need the layer's input: the gradient w.r.t. the input of a convolution needs
only its (frozen) weights, that of a frozen, eval-mode BatchNorm only its
scale, and that of a ReLU/ReLU6 only *where* it was active. PyTorch's own
autograd keeps every convolution's full float input anyway, so training
biases through it costs almost as much memory as training everything.

``LeanMode`` is one mechanism for every zoo family: a torch function mode
that, while active, routes the functional calls the zoo models make
(``conv2d``, ``batch_norm``, ``relu``, ``relu6``, ``hardtanh``) through
autograd functions that keep only what the backward needs: nothing for a
frozen convolution, the per-channel scale for a frozen BatchNorm, a one-byte
mask for a ReLU. The forward results are the same to float rounding (a
frozen BatchNorm becomes one multiply-add); layers whose weights train (and
every op not listed) take PyTorch's ordinary path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class _FrozenConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.conf = (x.shape, stride, padding, dilation, groups, bias is not None and bias.requires_grad)
        ctx.save_for_backward(weight)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        shape, stride, padding, dilation, groups, bias_grad = ctx.conf
        (weight,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(shape, weight, grad, stride, padding, dilation, groups)
        grad_b = grad.sum(dim=(0, 2, 3)) if bias_grad else None
        return grad_x, None, grad_b, None, None, None, None


class _MaskedClamp(torch.autograd.Function):
    """clamp(x, low, high) keeping a bool mask of where the gradient passes."""

    @staticmethod
    def forward(ctx, x, low, high):
        y = torch.clamp(x, low, high)
        inside = x > low if high is None else (x > low) & (x < high)
        ctx.save_for_backward(inside)
        return y

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def _frozen(t) -> bool:
    return t is None or not t.requires_grad


class LeanMode(TorchFunctionMode):
    """While active, frozen convolutions, frozen eval-mode BatchNorm and
    ReLU/ReLU6 keep only what their backward needs (see the module doc)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            params = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args))
            params.update(kwargs)
            padding = params.get("padding", 0)
            if _frozen(params["weight"]) and not isinstance(padding, str):
                return _FrozenConv.apply(params["input"], params["weight"], params.get("bias"),
                                         params.get("stride", 1), padding, params.get("dilation", 1),
                                         params.get("groups", 1))
        elif func is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            params = dict(zip(names, args))
            params.update(kwargs)
            if not params.get("training", False) and _frozen(params.get("weight")) \
                    and params["running_mean"] is not None:
                x, mean, var = params["input"], params["running_mean"], params["running_var"]
                scale = torch.rsqrt(var + params.get("eps", 1e-5))
                if params.get("weight") is not None:
                    scale = scale * params["weight"]
                shift = -mean * scale
                if params.get("bias") is not None:
                    shift = shift + params["bias"]
                view = (1, -1) + (1,) * (x.dim() - 2)
                # x * constant keeps only the constant for the backward.
                return x * scale.detach().view(view) + shift.view(view)
        elif func in (F.relu, torch.relu, F.relu6, F.hardtanh):
            x = args[0] if args else kwargs["input"]
            if func is F.hardtanh:
                low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
                high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            else:
                low, high = 0.0, (6.0 if func is F.relu6 else None)
            if x.requires_grad:
                return _MaskedClamp.apply(x, low, high)
        return func(*args, **kwargs)
