"""The article's head: one fully-connected layer + softmax on frozen features.

scikit-learn style: hyper-parameters in ``__init__`` (no logic there),
``fit`` returns ``self``, fitted attributes end in ``_``. Trained with
mini-batch Adam on standardised features (batch size ~n/50, 32..1024), L2 on the weights, early stopping on
the validation split (the best epoch's weights are kept)."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

MIN_STEPS = 25  # optimizer steps per epoch, at least


class _Adam:
    """Adam (Kingma & Ba 2015) on plain tensors, updated in place."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [p.new_zeros(p.shape) for p in params]
        self.v = [p.new_zeros(p.shape) for p in params]

    def step(self, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, v.div(c2).sqrt_().add_(self.eps), value=-self.lr / c1)


class SoftmaxHead:
    def __init__(self, epochs: int = 30, batch_size: int | None = None, learning_rate: float = 1e-3,
                 l2: float = 1e-4, patience: int = 5, seed: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.patience = patience
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            num_classes: int | None = None) -> "SoftmaxHead":
        import torch

        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.int64)
        n, d = X.shape
        c = int(num_classes or (y.max() + 1))
        gen = torch.Generator().manual_seed(self.seed)
        # Shuffle once (the one full copy of X), then standardise in place;
        # torch's reductions use every core, numpy's one.
        order = torch.randperm(n, generator=gen)
        Xt = torch.from_numpy(X)[order]
        yt = torch.from_numpy(y)[order]
        std, mean = torch.std_mean(Xt, dim=0, correction=0)
        # A constant feature (std 0) must not blow up; 1e-6 relative floor.
        std.clamp_(min=1e-6 * max(float(std.mean()), 1e-12))
        Xt.sub_(mean).div_(std)
        self.mean_, self.scale_ = mean.numpy().copy(), std.numpy().copy()
        has_val = X_val is not None and len(X_val) > 0
        if has_val:
            Xv = torch.from_numpy(np.asarray(X_val, np.float32)).sub(mean).div_(std)
            yv = torch.from_numpy(np.asarray(y_val, np.int64))
        # Gradients by hand: for a linear softmax they are two matrix products,
        # and skipping autograd/optimizer bookkeeping makes an epoch several
        # times faster on a phone-class CPU.
        W = torch.randn(c, d, generator=gen) * 0.01
        b = torch.zeros(c)
        adam = _Adam([W, b], self.learning_rate)
        batch_size = self.batch_size or int(min(1024, max(32, n // 50)))
        best = (-1.0, float("inf"))
        best_state = None
        bad_epochs = 0
        self.history_ = []
        self.best_epoch_ = 0
        # Shuffle rows once, then visit contiguous batches in a new random
        # order each epoch: re-gathering all rows every epoch costs more than
        # the training itself at 60,000 x 1,280. A small set is repeated so an
        # epoch is at least MIN_STEPS steps: 30 single-step epochs on 30
        # images would leave the head far from converged.
        repeats = max(1, -(-MIN_STEPS * batch_size // n))
        if repeats > 1:
            Xt, yt = Xt.repeat(repeats, 1), yt.repeat(repeats)
        starts = torch.arange(0, len(yt), batch_size)
        for epoch in range(self.epochs):
            total = 0.0
            for start in starts[torch.randperm(len(starts), generator=gen)].tolist():
                xb, yb = Xt[start : start + batch_size], yt[start : start + batch_size]
                m = len(yb)
                logits = torch.addmm(b, xb, W.T)
                logp = torch.log_softmax(logits, dim=1)
                total += float(-logp.gather(1, yb[:, None]).sum())
                g = logp.exp_()
                g[torch.arange(m), yb] -= 1.0
                g /= m
                adam.step([torch.addmm(W, g.T, xb, beta=self.l2), g.sum(0)])
            record = {"epoch": epoch + 1, "train_loss": total / len(yt) + 0.5 * self.l2 * float(W.pow(2).sum())}
            if has_val:
                vl = torch.addmm(b, Xv, W.T)
                val_loss = float(torch.nn.functional.cross_entropy(vl, yv))
                val_acc = float((vl.argmax(1) == yv).float().mean())
                record.update(val_loss=val_loss, val_accuracy=val_acc)
                # Accuracy first, loss breaks ties: small validation sets tie often.
                # A loss gain under 1e-3 is noise; otherwise the run never stops.
                if val_acc > best[0] or (val_acc == best[0] and val_loss < best[1] - 1e-3):
                    best = (val_acc, val_loss)
                    best_state = (W.clone(), b.clone())
                    self.best_epoch_ = epoch + 1
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            self.history_.append(record)
            if has_val and bad_epochs >= self.patience:
                break
        if best_state is not None:
            W, b = best_state
        else:
            self.best_epoch_ = len(self.history_)
        self.n_epochs_ = len(self.history_)
        self.coef_ = W.numpy().copy()
        self.intercept_ = b.numpy().copy()
        self.classes_ = np.arange(c)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, np.float32) - self.mean_) / self.scale_
        return Z @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        logits = self.decision_function(X)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(axis=1)

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) acting on raw features: the standardisation folded in."""
        W = (self.coef_ / self.scale_).astype(np.float32)
        b = (self.intercept_ - W @ self.mean_).astype(np.float32)
        return W, b
