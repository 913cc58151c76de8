"""One Cross-D network for 2D ``(B, C, H, W)`` and 3D ``(B, C, D, H, W)`` inputs, with one set of tensors.

A Cross-D layer keeps one 3D knowledge base for both uses (Yavuz & Yang, arXiv 2411.02441), and every
tensor of a Cross-D network (norm layers included) has the same number of elements for ``spatial_dims=2``
and ``3``. :class:`DualDimNet` owns the tensors of a 3D network and runs 2D inputs through a 2D twin of it
that holds no data (built on the ``meta`` device), with :func:`torch.func.functional_call` substituting the
3D tensors (as views of the 2D shape). Views share storage, so gradients of a 2D loss reach the 3D
parameters, and BatchNorm running statistics and ``num_batches_tracked`` updated by a 2D forward are the 3D
buffers: nothing is copied between a 2D and a 3D module, in either direction, at any step.

The 3D network's module tree is the dual network's own (the same ``_modules``, ``_parameters`` and
``_buffers`` dicts), so ``state_dict()`` has exactly the 3D network's keys: a checkpoint of a dual network
loads strictly into today's 2D or 3D network, and theirs into it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

from monai_crossd.networks.nets.resnet import crossd_resnet18
from monai_crossd.networks.nets.unet import CrossDUNet

__all__ = ["DualDimNet", "dual_crossd_resnet18", "dual_crossd_unet"]


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` by its ``state_dict``-style name."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


class DualDimNet(nn.Module):
    """A network taking 2D and 3D inputs with one set of parameters and buffers (shared by storage).

    ``build(3)`` is the network whose tensors this module owns and which runs 3D inputs; ``build(2)`` is
    built once on the ``meta`` device (no memory, invisible to ``parameters()``, ``state_dict()`` and
    ``.to()``) and runs 2D inputs on the 3D network's tensors. The 2D twin's modules follow the training
    mode of their 3D counterparts at every call (``train()``/``eval()``, also per sub-module).

    The ``state_dict`` keys are the 3D network's (no prefix). Attributes of the 3D network's root module
    are on :attr:`net3d`; its children (``conv1``, ``layer1``, ``model``, ...) are also this module's.

    Not supported: ``nn.DataParallel`` (the 2D path swaps tensors into one shared twin; use
    ``DistributedDataParallel``), and building the networks from a ``build`` that is not picklable if the
    module is to be pickled.

    Args:
        build: ``build(spatial_dims) -> nn.Module``, e.g.
            ``functools.partial(crossd_resnet18, in_channels=1, num_classes=2)``. The two networks must have
            the same parameter and buffer names, each with the same number of elements in 2D and 3D, and the
            same module names (all Cross-D networks of this package do, for norms without spatial shapes). Every
            tensor the 2D network computes with must be a parameter or buffer (the twin is built on ``meta``).

    Raises:
        TypeError: ``build`` is not callable or does not return an ``nn.Module``.
        ValueError: the 2D and 3D networks differ in tensor names, sizes or modules; the message names the keys.

    Example:
        >>> import functools
        >>> build = functools.partial(crossd_resnet18, in_channels=1, num_classes=2, block_inplanes=(4, 8, 8, 8))
        >>> net = DualDimNet(build)
        >>> net(torch.randn(2, 1, 32, 32)).shape, net(torch.randn(2, 1, 8, 16, 16)).shape
        (torch.Size([2, 2]), torch.Size([2, 2]))
        >>> net3d = build(3)
        >>> net3d.load_state_dict(net.state_dict())
        <All keys matched successfully>
    """

    def __init__(self, build: Callable[[int], nn.Module]) -> None:
        super().__init__()
        if isinstance(build, nn.Module) or not callable(build):
            raise TypeError(
                f"`build` should be a callable `build(spatial_dims) -> nn.Module`, got {type(build).__name__}."
            )
        net3d = build(3)
        with torch.device("meta"):
            template2d = build(2)
        for dims, net in ((3, net3d), (2, template2d)):
            if not isinstance(net, nn.Module):
                raise TypeError(f"`build({dims})` should return an nn.Module, got {type(net).__name__}.")
        shapes = self._check_twins(net3d, template2d)
        # plain attributes: kept out of the module tree (parameters(), state_dict(), .to(), children())
        self.__dict__.update(build=build, net3d=net3d, template2d=template2d, shapes2d=shapes)
        # the 3D network's tree is this module's own: identical state_dict keys, and .to()/.train()/hooks on the
        # children act on the 3D network itself (the same module objects)
        self.__dict__.update(_modules=net3d._modules, _parameters=net3d._parameters, _buffers=net3d._buffers)
        self.train(net3d.training)

    @staticmethod
    def _check_twins(net3d: nn.Module, template2d: nn.Module) -> dict[str, torch.Size]:
        """The 2D shape of every tensor, after checking that the 3D network has each with as many elements."""
        t3, t2 = _tensors(net3d), _tensors(template2d)
        if set(t3) != set(t2):
            raise ValueError(
                "`build(2)` and `build(3)` should have the same parameters and buffers; only in 2D: "
                f"{sorted(set(t2) - set(t3))}, only in 3D: {sorted(set(t3) - set(t2))}."
            )
        sizes = [
            f"{k}: 2D {tuple(t2[k].shape)} vs 3D {tuple(t3[k].shape)}" for k in t2 if t2[k].numel() != t3[k].numel()
        ]
        if sizes:
            raise ValueError(f"`build(2)` and `build(3)` should have tensors of equal sizes, got {sizes}.")
        m3, m2 = [n for n, _ in net3d.named_modules()], [n for n, _ in template2d.named_modules()]
        if m3 != m2:
            raise ValueError(
                f"`build(2)` and `build(3)` should have the same modules; only in 2D: {sorted(set(m2) - set(m3))}, "
                f"only in 3D: {sorted(set(m3) - set(m2))}."
            )
        return {k: v.shape for k, v in t2.items()}

    def train(self, mode: bool = True) -> DualDimNet:
        """Set the training mode of the shared modules, the 3D root module and the 2D twin."""
        super().train(mode)
        self.net3d.training = mode
        self.template2d.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` through the 2D network, ``(B, C, D, H, W)`` through the 3D one; both on the same tensors.

        Raises:
            TypeError: ``x`` is not a tensor.
            ValueError: ``x`` is neither 4D nor 5D.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: `x` should be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim == 5:
            return self.net3d(x)
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__}: `x` should be 4D (B, C, H, W) or 5D (B, C, D, H, W), got shape "
                f"{tuple(x.shape)}."
            )
        for twin, module in zip(self.template2d.modules(), self.net3d.modules()):  # same order: checked in __init__
            twin.training = module.training
        tensors = {k: t.view(self.shapes2d[k]) for k, t in _tensors(self.net3d).items()}
        return functional_call(self.template2d, tensors, (x,), tie_weights=False, strict=True)

    def __getstate__(self) -> dict:
        """Pickle without the 2D twin (meta tensors): it is rebuilt from ``build`` on unpickling."""
        return {k: v for k, v in self.__dict__.items() if k != "template2d"}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        with torch.device("meta"):
            template2d = self.build(2)
        self.__dict__["template2d"] = template2d.train(self.training)


def dual_crossd_resnet18(in_channels: int, num_classes: int, **kwargs) -> DualDimNet:
    """Cross-D ResNet18 for 2D and 3D inputs: ``DualDimNet`` of :func:`crossd_resnet18` (``kwargs`` go to it).

    Example:
        >>> net = dual_crossd_resnet18(1, 3, block_inplanes=(4, 8, 8, 8))
        >>> net(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3])
    """
    return DualDimNet(functools.partial(crossd_resnet18, in_channels=in_channels, num_classes=num_classes, **kwargs))


def dual_crossd_unet(
    in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int], **kwargs
) -> DualDimNet:
    """:class:`CrossDUNet` for 2D and 3D inputs: ``DualDimNet`` of it (``kwargs`` go to ``CrossDUNet``).

    Example:
        >>> net = dual_crossd_unet(1, 2, channels=(4, 8), strides=(2,), norm="batch")
        >>> net(torch.randn(2, 1, 16, 16)).shape, net(torch.randn(2, 1, 8, 16, 16)).shape
        (torch.Size([2, 2, 16, 16]), torch.Size([2, 2, 8, 16, 16]))
    """
    build = functools.partial(
        CrossDUNet, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
        strides=tuple(strides), **kwargs,
    )  # fmt: skip
    return DualDimNet(build)
