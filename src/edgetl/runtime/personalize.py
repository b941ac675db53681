"""Keep learning on the device: new examples, new classes, on plain ONNX Runtime.

A :class:`Personalizer` holds the bundle's frozen feature model
(``features.onnx``), the softmax head (``weight``, ``bias`` on standardised
features) and a store of features: the bundle's exemplars of the classes it was
trained on plus everything the user added. Images are embedded once and
dropped; only their features are kept. Training runs the bundle's
``train_step.onnx``, one ONNX Runtime call per mini-batch, so the same loop
works in any app that has ONNX Runtime (numpy + onnxruntime + Pillow here,
never torch).

The state is one safetensors file in ``state_dir``, replaced atomically by
:meth:`Personalizer.save` (written to a temporary name, flushed, renamed): a process killed while saving leaves the previous state.
The device runtime does this itself rather than through the host's
``edgetl._files``: it depends on nothing but numpy, onnxruntime, Pillow,
safetensors and ``edgetl.data``/``edgetl.errors``.

One writer at a time: :meth:`Personalizer.edit` holds the state folder's lock
(``edgetl.runtime.lock``) from reading the state to the end of the block, so
a second writer waits; :meth:`Personalizer.save` takes the lock too and
refuses to replace a state that another process saved after this one read
it (it would silently drop that save's examples). Numbers that are not
finite (NaN, infinity) are refused when a state is read, saved or trained,
never stored or printed as an answer."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import numpy as np

from ..data.folder import control_characters, visible
from ..errors import BundleError, DataError, StorageError, storage_error
from .bundle import check_finite, file_sha256, read_device_files
from .lock import folder_lock
from .rng import Mulberry32, balanced_order
from .predictor import Prediction, check_probabilities, run_images, top_predictions
from .session import make_session

STATE_FILE = "personal.safetensors"
STATE_FORMAT = "edgetl.personal/1"
EMBED_BATCH = 8


def _sweep_debris(state_dir: str) -> None:
    """Remove the temporary files of writers killed mid-save
    (``.personal.safetensors.tmp-PID`` of a process that is gone; older
    releases named them ``.personal.safetensors.XXXX.tmp``)."""
    for stale in glob.glob(os.path.join(glob.escape(state_dir), f".{STATE_FILE}.*")):
        pid = stale.rsplit("-", 1)[-1]
        if stale.endswith(".tmp") or (pid.isdigit() and not _pid_alive(int(pid))):
            with suppress(OSError):
                os.unlink(stale)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _write_durably(path: str, data: bytes) -> None:
    """``data`` to ``.NAME.tmp-PID`` beside ``path``, flushed to the disk, then renamed over it."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            # Written and flushed, yet gone: something else removed it (or the
            # folder). Say so rather than blame the disk.
            gone = f"the temporary file '{tmp}'" if os.path.isdir(folder) else f"the folder '{folder}'"
            raise StorageError(f"Cannot save {name}: {gone} was removed by another process while it was being "
                               f"written; nothing was saved; make sure only edgetl writes in '{folder}' and "
                               f"run it again") from None
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header (8-byte length, JSON)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("no metadata")
    return meta


def _check_state(arrays: dict, meta: dict, path: str, dim: int) -> None:
    """A state's arrays fit its labels and the bundle's feature width, and are finite numbers."""
    fix = "move it away and start again with 'edgetl device add'"
    n = len(meta["labels"])
    weight, bias, features, labels = (arrays[k] for k in ("weight", "bias", "features", "labels"))
    if (weight.shape != (n, dim) or bias.shape != (n,) or features.ndim != 2 or features.shape[1] != dim
            or labels.shape != features.shape[:1] or labels.dtype.kind not in "iu"
            or (labels.size and not (0 <= labels.min() and labels.max() < n))):
        raise BundleError(f"Personalization state '{path}' does not fit its {n} labels and the bundle's "
                          f"{dim} features; {fix}")
    check_finite(arrays, path, fix)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# On-device imprinting of a new class (Personalizer._imprint; edgetl.js mirrors it step by step).
# SHRINK: the discriminant adds SHRINK x the mean eigenvalue of the within-class scatter to it. The stored
# examples are few (~50 per class or fewer) in hundreds of dimensions, so the scatter's own estimate is
# mostly noise; a ridge ten times its average eigenvalue keeps the direction close to the plain difference
# of means and only discounts the few directions in which every class clearly varies.
SHRINK = 10.0
# FOLDS: the stored examples' scores on the new row are computed by a row built without them, in FOLDS
# parts (each part scored by the row built from the other four fifths): five is the usual cross-fitting
# compromise between honest numbers (nothing scored by a row it shaped) and rows close to the full one.
FOLDS = 5
# OLD_LOSS_BUDGET: the bias lets the new class take at most this expected share of each old class's
# photos (judged on honest scores). One per cent: the new class must not cost the old ones more than a
# point or two (issue 14's bar is two), and half of that is left for the estimate's own error.
OLD_LOSS_BUDGET = 0.01
# NEW_CLASS_RECALL: the bias goes no higher than the one-sided prediction bound at which this share of the
# new class's unseen photos is expected to be won; above it, only old photos are gained.
NEW_CLASS_RECALL = 0.95
_Z_NEW_CLASS_RECALL = 1.6448536269514722  # the standard normal quantile of NEW_CLASS_RECALL
_Z_OLD_LOSS_BUDGET = 2.3263478740408408  # the standard normal quantile of 1 - OLD_LOSS_BUDGET
_BISECTIONS = 100  # halvings of the search interval for the bias: past float64 resolution


def _shrinkage_solve(z: np.ndarray, labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(S + a I)^-1 (x - centre)`` for each column of ``x`` (d x m): ``S =
    D'D / n`` the within-class scatter of the stored standardised features
    ``z`` (n x d, float64; ``D`` each row minus its class mean), ``a = SHRINK *
    tr(S) / d``, ``centre`` the mean of the class means. By the Woodbury
    identity: one n x n system, no d x d matrix."""
    classes, index = np.unique(labels, return_inverse=True)
    means = np.stack([z[index == i].mean(axis=0) for i in range(len(classes))])
    rhs = x - means.mean(axis=0)[:, None]
    dev = z - means[index]
    n, d = dev.shape
    gram = dev @ dev.T
    trace = float(np.trace(gram)) / n
    if not trace > 0:  # every class's examples identical: no scatter to discount
        return rhs
    a = SHRINK * trace / d
    gram.flat[:: n + 1] += n * a  # D D' + n a I
    return (rhs - dev.T @ np.linalg.solve(gram, dev @ rhs)) / a


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) through erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7; the
    same formula in edgetl.js, which has no erf)."""
    x = np.asarray(x, np.float64)
    y = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * y)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-y * y)
    return 0.5 * (1.0 + np.where(x < 0, -erf, erf))


def _student_quantile(nu: int, z: float) -> float:
    """Student's t quantile with ``nu`` degrees of freedom at the normal
    quantile ``z`` (Cornish-Fisher expansion, two terms)."""
    return z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)


def _budget_bias(t_old: np.ndarray, labels: np.ndarray) -> float | None:
    """The bias at which the new class is expected to take OLD_LOSS_BUDGET of
    an old class's photos, on average over the classes: each class's honest
    thresholds ``t_old`` (the new class wins a photo when bias > t) taken as
    normal with its mean and predictive spread, a tail rather than the
    sample's lowest values because 10-50 examples a class say little about
    the lowest 1 %. Predictive spread of a photo not among the class's n:
    sd x sqrt(1 + 1/n) (the mean's own error), widened by Student's over the
    normal quantile at the budget, t(n - 1) / z (the spread's own error: x 1.21
    for 10 examples, x 1.03 for 50), so that small classes, whose tails are
    the least known, are given the most room. None when no class has two
    examples that differ."""
    mus, sds = [], []
    for c in np.unique(labels):
        t = t_old[labels == c]
        if len(t) >= 2:
            sd = (float(t.std(ddof=1)) * np.sqrt(1.0 + 1.0 / len(t))
                  * _student_quantile(len(t) - 1, _Z_OLD_LOSS_BUDGET) / _Z_OLD_LOSS_BUDGET)
            if sd > 0:
                mus.append(float(t.mean()))
                sds.append(sd)
    if not mus:
        return None
    mus, sds = np.array(mus), np.array(sds)
    lo, hi = float((mus - 10 * sds).min()), float((mus + 10 * sds).max())  # Phi(-10) ~ 1e-23: outside
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if float(_normal_cdf((mid - mus) / sds).mean()) > OLD_LOSS_BUDGET:
            hi = mid
        else:
            lo = mid
    return lo


def _separating_bias(t_new: np.ndarray, t_old: np.ndarray) -> float:
    """The bias that best separates the new examples (won when bias > t) from
    the stored ones (balanced accuracy), the middle of the best interval."""
    cuts = np.unique(np.concatenate([t_new, t_old]))
    mids = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    new_won = (mids[:, None] > t_new[None, :]).mean(axis=1)
    old_kept = (mids[:, None] <= t_old[None, :]).mean(axis=1) if len(t_old) else np.ones(len(mids))
    score = new_won + old_kept
    best = np.flatnonzero(score == score.max())
    return float(mids[best[len(best) // 2]])


def fold_of(labels: np.ndarray) -> np.ndarray:
    """Each row's part (0..FOLDS-1): its rank among the rows of its class, modulo FOLDS."""
    folds = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        folds[rows] = np.arange(len(rows)) % FOLDS
    return folds


class Personalizer:
    """On-device learning for a bundle written by ``edgetl train``.

    ``Personalizer(run_dir, state_dir)`` opens the state in ``state_dir`` if
    there is one (``run_dir`` may then be None: the state remembers its
    bundle), otherwise starts from the bundle. Nothing is written until
    :meth:`save`. Where several processes may change the same state, open it
    with ``with Personalizer.edit(run_dir, state_dir) as p:``: the others
    wait until the block ends."""

    def __init__(self, run_dir: str | os.PathLike | None, state_dir: str | os.PathLike, int8: bool = False,
                 num_threads: int | None = None):
        self.state_dir = os.fspath(state_dir)
        self._holds_lock = False
        state_path = os.path.join(self.state_dir, STATE_FILE)
        saved = self._read_state(state_path) if os.path.isfile(state_path) else None
        # The state as read: save() refuses to replace a state someone else saved since.
        self._read_sha256 = saved[2] if saved is not None else None
        if saved is not None:
            arrays, meta, _ = saved
            stored_run = meta["run_dir"]
            if run_dir is not None and os.path.realpath(os.fspath(run_dir)) != os.path.realpath(stored_run):
                raise DataError(f"State '{self.state_dir}' belongs to bundle '{stored_run}', not '{run_dir}'; "
                                f"use another state folder for this bundle")
            run_dir, int8 = stored_run, meta["int8"] == "1"
        elif run_dir is None:
            raise DataError(f"'{self.state_dir}' holds no personalization state; start one with "
                            f"'edgetl device add RUN_DIR {self.state_dir} --label NAME IMAGE...'")
        files = read_device_files(os.fspath(run_dir), int8=int8)
        self.run_dir = os.path.abspath(files.bundle.run_dir)
        self.int8 = int8
        self.input_spec = files.bundle.input_spec
        self.l2 = files.l2
        self._mean, self._scale = files.head["mean"], files.head["scale"]
        # How much higher the bundle head's best logit is on each of its exemplars than on a photo it did
        # not train on (written by the host, out of fold; see training.bundle.exemplar_optimism). The
        # exemplars are the first rows of the stored features, in every state made from this bundle.
        self._optimism = files.head.get("exemplar_optimism")
        self._bundle_labels = files.head["exemplar_labels"].astype(np.int64)
        self._features_path = files.features_path
        self._features_hash = file_sha256(files.features_path)
        self._features = make_session(files.features_path, num_threads=num_threads)
        self._step = make_session(files.train_step_path, num_threads=num_threads)
        if saved is None:
            self.labels = list(files.bundle.labels)
            self.weight = files.head["weight"].astype(np.float32)
            self.bias = files.head["bias"].astype(np.float32)
            self.stored_features = files.head["exemplar_features"].astype(np.float32)
            self.stored_labels = files.head["exemplar_labels"].astype(np.int64)
            self.num_added = 0
            self.history: list[dict] = []
        else:
            if meta["features_sha256"] != self._features_hash:
                raise BundleError(f"The feature model in '{self.run_dir}' changed since state '{self.state_dir}' "
                                  f"was made (the stored features no longer match it); start a new state folder")
            _check_state(arrays, meta, state_path, int(files.head["weight"].shape[1]))
            self.labels = meta["labels"]
            self.weight, self.bias = arrays["weight"], arrays["bias"]
            self.stored_features, self.stored_labels = arrays["features"], arrays["labels"]
            self.num_added = meta["num_added"]
            self.history = meta["history"]

    @classmethod
    @contextmanager
    def edit(cls, run_dir: str | os.PathLike | None, state_dir: str | os.PathLike,
             **kwargs) -> Iterator["Personalizer"]:
        """``with Personalizer.edit(run_dir, state_dir) as p:`` opens the state
        holding its folder's lock until the block ends, so another writer
        (another process, or another ``edit``) waits instead of working on a
        copy that one of the two saves would overwrite. Call :meth:`save`
        inside the block; a folder made for the lock is removed again if
        nothing was saved in it."""
        with folder_lock(os.fspath(state_dir)):
            p = cls(run_dir, state_dir, **kwargs)
            p._holds_lock = True
            try:
                yield p
            finally:
                p._holds_lock = False

    # -- state -------------------------------------------------------------

    def _read_state(self, path: str):
        """(arrays, metadata with labels/num_added/history decoded, sha256 of the file)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        broken = (f"Personalization state '{path}' is damaged; move it away and start again with "
                  f"'edgetl device add'")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            arrays = load(data)
            meta = dict(_safetensors_metadata(data))
            needed = ("format", "run_dir", "int8", "labels", "features_sha256", "num_added", "history")
            if meta.get("format") != STATE_FORMAT or any(k not in meta for k in needed) or \
                    any(k not in arrays for k in ("weight", "bias", "features", "labels")):
                raise ValueError("not an edgetl state")
            meta["labels"] = json.loads(meta["labels"])
            meta["num_added"] = int(meta["num_added"])
            meta["history"] = json.loads(meta["history"])
            if not (isinstance(meta["labels"], list) and all(isinstance(x, str) for x in meta["labels"])
                    and isinstance(meta["history"], list)):
                raise ValueError("labels or history of the wrong type")
        except (SafetensorError, OSError, ValueError, TypeError, RecursionError):
            raise BundleError(broken) from None
        return arrays, meta, hashlib.sha256(data).hexdigest()

    def _state_sha256(self, path: str) -> str | None:
        """sha256 of the state file now on the disk (None if there is none)."""
        try:
            return file_sha256(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, f"the learning state {STATE_FILE}", self.state_dir) from None

    def save(self) -> str:
        """Write the state atomically, holding the state folder's lock; returns
        the state file's path. Refused (DataError, nothing written) when
        another process saved the state after this one read it, and when the
        head or the stored features hold NaN or infinity."""
        if self._holds_lock:
            return self._save()
        with folder_lock(self.state_dir):
            return self._save()

    def _save(self) -> str:
        from safetensors.numpy import save

        path = os.path.join(self.state_dir, STATE_FILE)
        if self._state_sha256(path) != self._read_sha256:
            raise DataError(f"State '{self.state_dir}' was saved by another process after it was opened here; "
                            f"nothing was saved (that would drop what the other one saved): open it again and "
                            f"repeat the change, inside 'with Personalizer.edit(...)' to wait for other writers")
        meta = {
            "format": STATE_FORMAT,
            "run_dir": self.run_dir,
            "int8": "1" if self.int8 else "0",
            "labels": json.dumps(self.labels),
            "features_sha256": self._features_hash,
            "num_added": str(self.num_added),
            "history": json.dumps(self.history),
        }
        arrays = {"weight": self.weight, "bias": self.bias, "features": self.stored_features,
                  "labels": self.stored_labels}
        if not all(np.isfinite(arrays[k]).all() for k in ("weight", "bias", "features")):
            raise DataError(f"The head or the stored features hold values that are not numbers (NaN or infinity); "
                            f"nothing was saved in '{self.state_dir}': open the state again")
        _sweep_debris(self.state_dir)
        data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)
        try:
            _write_durably(path, data)
        except StorageError:
            raise
        except OSError as exc:  # disk full, read-only: the previous state stays as it was
            raise storage_error(exc, f"the learning state {STATE_FILE}", self.state_dir) from None
        self._read_sha256 = hashlib.sha256(data).hexdigest()
        return path

    # -- learning ----------------------------------------------------------

    def embed(self, images) -> np.ndarray:
        """Raw features (as ``features.onnx`` outputs them) of the images,
        ``EMBED_BATCH`` at a time: on a phone resident memory is the budget,
        and a batch's activations are most of it (measured: 10 x 50 images at
        96 px peak at 270 MB with batches of 32, 164 MB with 8, 138 MB with 1)."""
        feats = run_images(self._features, self.input_spec, images, "features", batch_size=EMBED_BATCH)
        if not np.isfinite(feats).all():
            raise BundleError(f"'{self._features_path}' computed features that are not numbers (NaN or infinity): "
                              f"its weights are damaged; train the bundle again ('edgetl train')")
        return feats

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        return (features - self._mean) / self._scale

    def add_examples(self, images, label: str) -> int:
        """Embed ``images`` as examples of ``label``; keeps their features only.

        A label the model has never seen becomes a class at once: its row is
        imprinted from its examples (a shrinkage discriminant of their mean,
        with a bias set on out-of-fold and leave-one-out scores; see
        ``_imprint``), no training needed; :meth:`fit` then refines every
        class. Returns the number of examples added."""
        label = str(label).strip()
        if not label:
            raise DataError("the label is empty; pass --label NAME")
        if bad := control_characters(label):
            raise DataError(f"the label '{visible(label)}' contains control characters ({bad}); a label is one line "
                            f"of plain text: pass another --label")
        images = list(images)
        if not images:
            raise DataError(f"no images given for '{label}'; pass at least one image")
        feats = self.embed(images).astype(np.float32)
        if label not in self.labels:
            self._imprint(self._standardise(feats))
            self.labels.append(label)
        index = self.labels.index(label)
        self.stored_features = np.concatenate([self.stored_features, feats])
        self.stored_labels = np.concatenate([self.stored_labels, np.full(len(feats), index, np.int64)])
        self.num_added += len(feats)
        return len(feats)

    def _honest_top(self, z_old: np.ndarray) -> np.ndarray:
        """The best logit of each stored example, less the optimism the host
        measured for the bundle's exemplars (0 for the examples added here)."""
        top = (z_old @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)).max(axis=1)
        n = len(self._bundle_labels)
        if (self._optimism is not None and len(self.stored_labels) >= n
                and np.array_equal(self.stored_labels[:n], self._bundle_labels)):
            top[:n] -= self._optimism.astype(np.float64)
        return top

    def _imprint(self, z_new: np.ndarray) -> None:
        """A new class row from its examples alone, no gradient training.

        Direction: shrinkage linear discriminant, ``(S + SHRINK * tr(S)/d * I)^-1
        (mean of the new examples - mean of the stored class means)``, S the
        stored examples' within-class scatter (what varies inside every class
        weighs less), at the median length of the other rows.

        Bias: the new class wins a photo when bias > t, t = the best old logit
        - the new row's score. It is set on honest numbers, not on scores of
        examples that shaped what scores them: the stored examples' scores on
        the new row come from rows built without them (FOLDS parts), their best
        logits are lowered by the optimism the host measured out of fold for the
        bundle's exemplars (the head trained on them), and the new examples are
        scored leave-one-out. The bias is the highest that keeps the expected
        loss of every old class at OLD_LOSS_BUDGET (``_budget_bias``), and no
        higher than the one-sided NEW_CLASS_RECALL prediction bound of the new
        class's leave-one-out thresholds. With one example (nothing to leave
        out): the threshold that best separates it from the stored examples,
        kept within the same budget."""
        z_new = np.asarray(z_new, np.float64)
        k = len(z_new)
        length = float(np.median(np.linalg.norm(self.weight, axis=1)))
        z_old = self._standardise(self.stored_features).astype(np.float64)
        labels = self.stored_labels

        def row(v: np.ndarray) -> np.ndarray:
            return length * v / max(float(np.linalg.norm(v)), 1e-12)

        centre_new = z_new.mean(axis=0)
        w = row(_shrinkage_solve(z_old, labels, centre_new[:, None])[:, 0]).astype(np.float32)
        # The stored examples' honest thresholds: each part scored by the row built from the others.
        folds = fold_of(labels)
        score_old = np.zeros(len(labels))
        for f in range(FOLDS):
            out = folds == f
            if out.any() and (~out).any():
                v = _shrinkage_solve(z_old[~out], labels[~out], centre_new[:, None])[:, 0]
                score_old[out] = z_old[out] @ row(v)
        t_old = self._honest_top(z_old) - score_old
        top_new = (z_new @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)).max(axis=1)
        budget = _budget_bias(t_old, labels)
        bias = None
        if k >= 2:  # leave-one-out: example i scored by the row built from the other k - 1
            others = (k * centre_new[:, None] - z_new.T) / (k - 1)
            solved = _shrinkage_solve(z_old, labels, others)
            t_loo = np.array([top_new[i] - z_new[i] @ row(solved[:, i]) for i in range(k)])
            m, s = float(t_loo.mean()), float(t_loo.std(ddof=1)) * np.sqrt(1.0 + 1.0 / k)
            if s > 0 and np.isfinite(s):
                bias = m + _student_quantile(k - 1, _Z_NEW_CLASS_RECALL) * s
        if bias is None:
            bias = _separating_bias(top_new - z_new @ w.astype(np.float64), t_old)
        if budget is not None:
            bias = min(bias, budget)
        self.weight = np.vstack([self.weight, w[None, :]])
        self.bias = np.append(self.bias, np.float32(bias))

    def fit(self, epochs: int = 20, learning_rate: float | None = None, batch_size: int = 32,
            l2: float | None = None, seed: int = 0) -> list[dict]:
        """Train the head on every stored feature through ``train_step.onnx``.

        Each epoch visits every class equally often (smaller classes are
        drawn with replacement up to the largest one's count), so five photos of a new class are
        not drowned by the old classes' exemplars; the order comes from
        ``rng.balanced_order`` (the web runtime draws the same one). Returns the per-epoch
        mean loss (also kept in ``history``)."""
        if epochs < 1:
            raise DataError(f"--epochs must be at least 1, got {epochs}")
        if len(np.unique(self.stored_labels)) < 2:
            raise DataError("training needs examples of at least two classes; add more with 'edgetl device add'")
        lr = np.array(learning_rate if learning_rate is not None else self.default_learning_rate(), np.float32)
        l2_arr = np.array(self.l2 if l2 is None else l2, np.float32)
        rng = Mulberry32(seed)
        weight, bias, history = self.weight, self.bias, []
        for _ in range(epochs):
            order = balanced_order(self.stored_labels, rng)
            losses = []
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                weight, bias, loss = self._step.run(None, {
                    "weight": weight, "bias": bias, "features": self.stored_features[rows],
                    "labels": self.stored_labels[rows], "learning_rate": lr, "l2": l2_arr,
                })
                losses.append(float(loss) * len(rows))
            mean_loss = sum(losses) / len(order)
            if not (np.isfinite(mean_loss) and np.isfinite(weight).all() and np.isfinite(bias).all()):
                # Diverged: NaN weights would predict label 0 for everything, and be saved.
                raise DataError(f"Training diverged at epoch {len(history) + 1} (loss {mean_loss:g}); the head was "
                                f"left as it was and nothing is saved: fit with a smaller learning rate "
                                f"(it was {float(lr):g})")
            history.append({"epoch": len(self.history) + len(history) + 1, "loss": mean_loss,
                            "examples": int(len(self.stored_labels)), "classes": len(self.labels)})
        self.weight, self.bias = weight, bias
        self.history.extend(history)
        return history

    def default_learning_rate(self) -> float:
        """1 / the largest eigenvalue of the stored features' second moment:
        the step a softmax head's loss (curvature at most that eigenvalue)
        takes without diverging, whatever the feature dimension."""
        z = self._standardise(self.stored_features)
        start = Mulberry32(0)  # the web runtime starts from the same vector
        v = np.array([start.uniform() - 0.5 for _ in range(z.shape[1])], np.float32)
        for _ in range(30):  # power iteration on z.T z / n
            v = z.T @ (z @ v) / len(z)
            top = float(np.linalg.norm(v))
            v /= max(top, 1e-12)
        return 1.0 / max(top, 1e-6)

    # -- inference ---------------------------------------------------------

    def predict_proba(self, images) -> np.ndarray:
        proba = _softmax(self._standardise(self.embed(images)) @ self.weight.T + self.bias)
        return check_probabilities(proba, f"The learning state in '{self.state_dir}'",
                                   "move it away and start again with 'edgetl device add'")

    def predict(self, images) -> list[Prediction]:
        return top_predictions(self.predict_proba(images), self.labels)

    def counts(self) -> dict[str, int]:
        """Stored examples per class (exemplars included)."""
        found = np.bincount(self.stored_labels, minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, found)}
