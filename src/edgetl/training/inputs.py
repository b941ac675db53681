"""From the scanned folder and the settings to what the network reads:
the InputSpec (grey or colour, crop), the input sizes to try, and the check
that every class kept enough readable images. Both training paths and
``edgetl plan`` use these, so they agree on what a folder means."""

from __future__ import annotations

import os

from ..errors import DataError


def folder_is_grayscale(paths: list[str]) -> bool:
    from ..data.image import is_grayscale_file

    seen = [is_grayscale_file(p) for p in paths]
    known = [v for v in seen if v is not None]
    return bool(known) and all(known)


def base_input_spec(backbone_spec, paths: list[str], grayscale: bool | None = None,
                    crop_fraction: float | None = None):
    """The backbone's InputSpec for these images: one channel when
    ``grayscale`` (None: when every image is grey — the article: a grey
    photo is often enough, and the first layer folds to one channel, the
    same features for a third of its work), ``crop_fraction`` if given."""
    spec = backbone_spec.input_spec
    if grayscale is None:
        grayscale = folder_is_grayscale(paths)
    if grayscale:
        from ..zoo.grayscale import gray_input_spec

        spec = gray_input_spec(spec)
    if crop_fraction is not None:
        spec = spec.replace(crop_fraction=float(crop_fraction))
    return spec


def search_sizes_for(config, default_size: int, paths: list[str]) -> list[int]:
    """The head path's input sizes, largest first: pinned, listed, or (search
    on) halving from the default plus the images' own resolution when it
    falls inside; (search off) the default."""
    from ..search import native_side, search_sizes, with_native_size

    if config.image_size is not None:
        return [config.image_size]
    if config.image_sizes:
        return sorted(set(config.image_sizes), reverse=True)
    if config.search == "on":
        return with_native_size(search_sizes(default_size), native_side(paths))
    return [default_size]


def fine_tune_input_spec(backbone_spec, paths: list[str], image_size: int | None = None,
                         grayscale: bool | None = None, crop_fraction: float | None = None):
    """The InputSpec a fine-tuning strategy trains at: ``image_size`` or the
    images' own scale (``finetune.planner.fine_tune_size``)."""
    from ..finetune.planner import fine_tune_size
    from ..search import native_side

    spec = base_input_spec(backbone_spec, paths, grayscale, crop_fraction)
    size = image_size or fine_tune_size(backbone_spec.input_spec.image_size, native_side(paths))
    return spec.replace(image_size=int(size))


def check_usable(used, data_dir: str) -> None:
    """Every class kept at least 2 readable images (one to train, one to validate)."""
    for idx, cls in enumerate(used.classes):
        n = int((used.targets == idx).sum())
        if n < 2:
            raise DataError(
                f"Class '{cls}' has {n} usable image{'s' if n != 1 else ''}; each class needs at least 2 "
                f"(one to train, one to validate): add images to {os.path.join(data_dir, cls)}"
            )
