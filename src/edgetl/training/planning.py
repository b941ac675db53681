"""``edgetl plan``'s figures as data: each training strategy's predicted peak
memory and compute for a folder, before anything trains (the CLI prints
them; the studio shows them before its Train button)."""

from __future__ import annotations

from .config import TrainConfig


def plan_strategies(data_dir: str, backbone: str = "efficientnet_lite0", image_size: int | None = None,
                    batch_size: int = 32, strategies: tuple[str, ...] | None = None,
                    max_memory_mb: float | None = None) -> dict:
    """``{"backbone", "image_size", "batch_size", "num_images", "num_classes",
    "idle_mb", "plans": [Plan.to_dict(), ...]}`` (``finetune.planner.plan``)."""
    from ..data.folder import scan_folder
    from ..finetune import CANDIDATES
    from ..finetune.planner import idle_mb, plan, warm_up
    from ..zoo import get_spec
    from .inputs import fine_tune_input_spec

    # Bounded as 'edgetl train' bounds them (TrainConfig's checks: 16 to 1024 px, batch >= 1, budget > 0).
    TrainConfig(data_dir=data_dir, backbone=backbone, image_size=image_size, batch_size=batch_size,
                max_memory_mb=max_memory_mb)
    folder = scan_folder(data_dir)
    input_spec = fine_tune_input_spec(get_spec(backbone), folder.paths, image_size)
    warm_up()
    plans = plan(backbone, len(folder.paths), len(folder.classes), input_spec, batch_size,
                 strategies=tuple(strategies) if strategies else CANDIDATES + ("scratch",),
                 max_memory_mb=max_memory_mb)
    return {"backbone": backbone, "image_size": input_spec.image_size, "batch_size": batch_size,
            "num_images": len(folder.paths), "num_classes": len(folder.classes), "idle_mb": round(idle_mb(), 1),
            "plans": [p.to_dict() for p in plans]}
