"""``TrainConfig``: the one home of every ``edgetl train`` setting.

Each field is a setting with its default, its type, its check and its help
text. The CLI's flags (``edgetl.cli.train``), a ``--config`` TOML file, the
``config.toml`` every run writes and the Python API
(``edgetl.train(TrainConfig(...))`` or ``edgetl.train(data_dir, out_dir,
**settings)``) all map onto these fields one to one, so a new setting is one
field here (plus its test)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields

from ..errors import DataError
from ..heads import HEAD_KINDS

MAX_IMAGE_SIZE = 1024  # a 1024 px float32 batch of 32 is already 400 MB
MIN_IMAGE_SIZE = 16

# Defaults that depend on the path the strategy takes (None in the config means "this").
HEAD_DEFAULTS = {"epochs": 100, "patience": 10}
FINETUNE_DEFAULTS = {"epochs": 15, "patience": 3, "batch_size": 32, "l2": 1e-4}
# The head's default weight decay is this over the number of labeled images:
# mean loss + l2/2 |W|^2 is then LogisticRegression(C=0.1)'s objective.
HEAD_L2_PER_IMAGE = 10.0

# Settings that describe an act of this invocation, not the run: never saved in config.toml.
# ray_address: the cluster this invocation ran on; a repeat elsewhere would not find it.
NOT_SAVED = ("overwrite", "resume", "ray_address")


def setting(default, help: str, *, type=None, flag: str | None = None, metavar: str | None = None,
            choices: tuple[str, ...] | None = None, check=None):
    """A field of TrainConfig. ``type``: the value's Python type(s) after
    parsing (int, float, str, bool, tuple); ``check(value) -> str | None``
    says what is wrong with a value of the right type."""
    meta = {"help": help, "type": type, "flag": flag, "metavar": metavar, "choices": choices, "check": check}
    return field(default=default, metadata=meta)


def _at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def _positive(v):
    return None if v > 0 else f"must be positive, got {v}"


def _between(low, high, *, low_open=True, high_open=True):
    def check(v):
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        return None if ok else f"must be between {low} and {high} ({'exclusive' if low_open and high_open else 'inclusive of ' + str(high)}), got {v}"
    return check


def _image_size(v):
    if v < MIN_IMAGE_SIZE:
        return f"must be at least {MIN_IMAGE_SIZE} pixels, got {v}"
    if v > MAX_IMAGE_SIZE:
        return f"must be at most {MAX_IMAGE_SIZE} pixels, got {v}"
    return None


def _image_sizes(v):
    return next((_image_size(s) for s in v if _image_size(s)), None)


def _macs(v):
    from ..search import parse_count

    return _positive(parse_count(v))


def _strategy(v):
    from ..finetune import parse_strategy

    parse_strategy(v)  # raises its own one-line error
    return None


def _heads(v):
    unknown = [h for h in v if h not in HEAD_KINDS]
    if unknown:
        raise DataError(f"Unknown head {unknown[0]!r}; choose from {', '.join(HEAD_KINDS)}")
    return None


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one ``edgetl train`` run (see each field's help)."""

    data_dir: str | None = setting(None, "DATA_DIR/<class>/<image>", type=str, flag="data_dir",
                                   metavar="DATA_DIR")
    out: str | None = setting(None, "the bundle folder (required)", type=str, metavar="RUN_DIR")
    backbone: str = setting("efficientnet_lite0", "default efficientnet_lite0; see 'edgetl models'", type=str)
    weights: str = setting("default", "backbone weights (.pth/.safetensors); default: packaged ImageNet",
                           type=str, metavar="PATH")
    image_size: int | None = setting(
        None, "pin the input size in pixels (default: searched, the backbone's default size and halvings)",
        type=int, check=_image_size)
    image_sizes: tuple | None = setting(None, "input sizes to search, comma-separated (e.g. 112,56)", type=tuple,
                                        metavar="LIST", check=_image_sizes)
    crop_fraction: float | None = setting(None, "centre crop as a fraction of the shorter side (default: the "
                                          "backbone's)", type=float, check=_between(0, 1, high_open=False))
    search: str = setting("on", "on (default): choose tap, input size and head by validation accuracy within the "
                          "budget; off: softmax head on the final layer at the default size (the naive recipe)",
                          type=str, choices=("on", "off"))
    tap: str | None = setting(None, "pin the tap point (e.g. block7, final); see metrics.json for the list", type=str)
    heads: tuple | None = setting(None, f"heads to try, comma-separated: {','.join(HEAD_KINDS)} (default: softmax)",
                                  type=tuple,
                                  metavar="LIST", check=_heads)
    max_latency_ms: float | None = setting(None, "budget: batch-1 latency measured here (ONNX Runtime, 1 thread)",
                                           type=float, check=_positive)
    max_macs: str | None = setting(None, "budget: multiply-accumulates per image, e.g. 40M or 0.5G", type=str,
                                   check=_macs)
    max_model_mb: float | None = setting(None, "budget: fp32 model size in MB", type=float, check=_positive)
    val_split: float = setting(0.2, "default 0.2", type=float, check=_between(0, 1))
    epochs: int | None = setting(None, "maximum epochs (default 100 for head, 15 otherwise); early stopping on the "
                                 "validation split", type=int, check=_at_least(1))
    learning_rate: float = setting(1e-3, "default 0.001", type=float, check=_positive)
    l2: float | None = setting(None, "weight decay (default: for the head, 10 / labeled images, the penalty of "
                               "scikit-learn's LogisticRegression(C=0.1) on standardised features; 0.0001 otherwise)",
                               type=float, check=_at_least(0))
    patience: int | None = setting(None, "epochs without improvement before stopping (default 10 for head, 3 "
                                   "otherwise)", type=int, check=_at_least(1))
    seed: int = setting(0, "default 0", type=int, check=_at_least(0))
    grayscale: bool | None = setting(None, "one input channel, or (--no-grayscale) three (default: one when every "
                                     "image is grey)", type=bool)
    overwrite: bool = setting(False, "replace RUN_DIR if it is an earlier edgetl run (only once the new run is "
                              "complete; any other folder is never replaced)", type=bool)
    strategy: str = setting("head", "what learns: head (default; frozen base, cached features), bias, last-K "
                            "(e.g. last-2), full, scratch, auto; see 'edgetl plan'", type=str, metavar="NAME",
                            check=_strategy)
    batch_size: int | None = setting(None, "fine-tuning batch size (default 32)", type=int, check=_at_least(1))
    max_memory_mb: float | None = setting(
        None, "peak training memory budget in MB (above Python + torch's own footprint): the batch size is lowered "
        "to fit, or the run refused before it starts", type=float, check=_positive)
    sample_images: int = setting(
        20000, "above this many labeled images (default 20000), the search scores its candidates and the raw-pixel "
        "baseline is fitted on a stratified sample of this many (metrics.json 'sample'); the chosen head is still "
        "trained on all of them and validated on the whole validation split", type=int, metavar="N",
        check=_at_least(1))
    resume: bool = setting(False, "continue a fine-tuning run of RUN_DIR that was interrupted (same settings)",
                           type=bool)
    engine: str = setting("local", "where features are extracted: local (default, this process) or ray (Ray Data "
                          "actors, the same features; pip install 'edgetl[ray]')", type=str, choices=("local", "ray"))
    ray_address: str | None = setting(None, "with --engine ray: the Ray cluster to join (auto: the one 'ray start' "
                                      "runs here; HOST:PORT; default: a local Ray started for this run)", type=str,
                                      metavar="ADDR")

    def __post_init__(self):
        for f in fields(self):
            value = _coerce(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            check = f.metadata["check"]
            problem = check(value) if value is not None and check else None
            if problem:
                raise DataError(f"{flag_name(f)} {problem}")

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: dict, source: str = "settings") -> "TrainConfig":
        """From a dict whose keys are field names (``image-size`` works too);
        an unknown key is refused naming the known ones."""
        return cls(**_known(values, source))

    @classmethod
    def from_toml(cls, path: str) -> "TrainConfig":
        return cls.from_mapping(read_toml(path), f"Config file '{path}'")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def with_defaults(self, defaults: dict) -> "TrainConfig":
        """Unset (None) fields among ``defaults`` filled in: HEAD_DEFAULTS or FINETUNE_DEFAULTS."""
        return self.replace(**{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def require_paths(self) -> None:
        if not self.data_dir or not self.out:
            raise DataError("'edgetl train' needs DATA_DIR and --out RUN_DIR (on the command line or in --config)")

    # -- output ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_toml(self) -> str:
        """The settings as TOML (``edgetl train --config`` reads it back);
        unset (None) settings are left out, so they keep their defaults."""
        lines = ["# edgetl train settings of this run; repeat it with: edgetl train --config config.toml", "[train]"]
        from ..features.location import is_uri

        data_dir = self.data_dir if is_uri(self.data_dir) else os.path.abspath(self.data_dir)  # s3://... as given
        values = dict(self.to_dict(), data_dir=data_dir, out=os.path.abspath(self.out))
        for key, value in values.items():
            if value is None or key in NOT_SAVED:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value)
            elif isinstance(value, (list, tuple)):
                text = json.dumps(list(value))
            else:
                text = json.dumps(str(value))  # a TOML basic string: JSON escapes are TOML escapes
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"


def read_toml(path: str) -> dict:
    """A ``--config`` file's settings (at the top level or under ``[train]``),
    keys as field names; an unknown key is refused naming the known ones."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise DataError(f"Config file '{path}' does not exist; pass the path of a TOML file") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # not UTF-8: not TOML either
        raise DataError(f"Config file '{path}' is not valid TOML ({exc}); fix it or pass the settings as "
                        f"flags") from None
    raw = raw.get("train", raw)
    if not isinstance(raw, dict):
        raise DataError(f"Config file '{path}': [train] must be a table of settings")
    return _known(raw, f"Config file '{path}'")


def _known(values: dict, source: str) -> dict:
    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise DataError(f"{source}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def flag_name(f) -> str:
    """How a user names the setting: its flag (``--image-size``)."""
    if f.name == "data_dir":
        return "DATA_DIR"
    return "--" + f.name.replace("_", "-")


def _coerce(f, value):
    """``value`` as the field's type, or a one-line error naming the setting.
    Only lossless readings are taken: "32" is not an image size, 1.0 is."""
    kind = f.metadata["type"]
    if value is None:
        return None
    if f.name == "search" and isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise DataError(f"{flag_name(f)} must be a list, got {value!r}")
        member = int if f.name == "image_sizes" else str
        items = [v.strip() for v in items] if isinstance(value, str) else items
        if member is int:  # "112,56" from a flag
            items = [int(v) if isinstance(v, str) and v.isascii() and v.isdigit() else v for v in items]  # not '²'
        out = tuple(_scalar(f, member, v) for v in items)
        return tuple(v for v in out if v != "")
    if f.name == "max_macs" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not _finite(value):
            raise DataError(f"{flag_name(f)} must be a finite number, got {value!r}")
        return value  # 4e7 and "40M" are both a count
    return _scalar(f, kind, value)


def _scalar(f, kind, value):
    wrong = DataError(f"{flag_name(f)} must be {_TYPE_WORDS[kind]}, got {value!r}")
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise wrong
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise wrong
        return float(value)
    if not isinstance(value, str):
        raise wrong
    choices = f.metadata["choices"]
    if choices and value not in choices:
        raise DataError(f"{flag_name(f)} must be {' or '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float (a TOML integer may have 400 digits)
        return False


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}
