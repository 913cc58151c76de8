"""Cross-D Conv in MONAI's ``Conv`` factory, ``Conv["crossd", spatial_dims]``, by an explicit :func:`register` call.

Nothing is registered at import time (MONAI's factory is global state), and the package's own networks build
their layers directly (``CrossDConv(spatial_dims, ...)``). Call ``monai_crossd.networks.register()`` once for code
that builds convolutions by name through MONAI's factory.
"""

from __future__ import annotations

from monai.networks.layers.factories import Conv

from monai_crossd.networks.blocks.crossd_conv import CrossDConv, CrossDConv2d, CrossDConv3d

__all__ = ["CROSSD", "crossd_factory", "register"]

CROSSD = "CROSSD"


def crossd_factory(dim: int) -> type[CrossDConv]:
    """The Cross-D class with the ``nn.ConvNd`` signature for ``dim`` spatial dimensions."""
    types = {2: CrossDConv2d, 3: CrossDConv3d}
    if dim not in types:
        raise ValueError(f"Cross-D Conv supports `spatial_dims` 2 or 3, got {dim!r}.")
    return types[dim]


def register() -> None:
    """Add ``"crossd"`` to ``monai.networks.layers.Conv`` (idempotent); refuses to replace another registration.

    Example:
        >>> from monai.networks.layers import Conv
        >>> register()
        >>> Conv["crossd", 3].__name__
        'CrossDConv3d'
    """
    if CROSSD in Conv.names:
        if Conv.components[CROSSD].value is not crossd_factory:
            raise RuntimeError("MONAI's Conv factory already has a different 'CROSSD' entry; not overwriting it.")
        return
    Conv.add_factory_callable("crossd", crossd_factory, "Cross-D Conv (arXiv 2411.02441)")
