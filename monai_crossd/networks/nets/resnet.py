"""ResNet (He et al., CVPR 2016) whose every convolution is a Cross-D Conv (arXiv 2411.02441).

The layout and the ``state_dict`` keys are torchvision's (``conv1``, ``bn1``, ``layer1..4``,
``downsample.0/1``, ``fc``), which is also the layout of the authors' Cross-D ResNet18 checkpoints
(after :func:`~monai_crossd.converters.convert_reference_state_dict`). Every parameter has the same
shape for ``spatial_dims=2`` and ``3``, so one checkpoint serves a 2D and a 3D network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.nets._utils import check_conv_kwargs, check_input, make_act, make_norm
from monai_crossd.utils import look_up

__all__ = [
    "CrossDBasicBlock",
    "CrossDBottleneck",
    "CrossDBottleneckV1",
    "CrossDResNet",
    "crossd_resnet18",
    "crossd_resnet34",
    "crossd_resnet50",
]


def _crossd(spatial_dims: int) -> Callable[..., CrossDConv]:
    """``CrossDConv`` with ``spatial_dims`` bound: called as ``nn.ConvNd`` is."""
    return functools.partial(CrossDConv, spatial_dims)


class CrossDBasicBlock(nn.Module):
    """Two 3x3 Cross-D convs with a residual connection (torchvision ``BasicBlock``).

    ``x -> conv1 -> bn1 -> act1 -> conv2 -> bn2 -> (+ downsample(x)) -> act2``. The activations are
    separate modules (``act1``, ``act2``) so that an activation with parameters (PReLU) gets its own.

    Args:
        spatial_dims: 2 or 3.
        in_planes: input channels.
        planes: output channels of the block (``planes * expansion``).
        stride: stride of ``conv1``. Defaults to 1.
        downsample: module applied to the input of the residual branch, or None. Defaults to None.
        norm: MONAI norm spec. Defaults to ``"batch"``.
        act: MONAI act spec. Defaults to ``"relu"``.
        conv_kwargs: extra :class:`~monai_crossd.networks.blocks.CrossDConv` arguments. Defaults to None.
    """

    expansion = 1

    def __init__(
        self,
        spatial_dims: int,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
        conv_kwargs: Mapping | None = None,
    ) -> None:
        super().__init__()
        conv_type, kw = _crossd(spatial_dims), check_conv_kwargs(conv_kwargs)
        self.conv1 = conv_type(in_planes, planes, 3, stride=stride, padding=1, bias=False, **kw)
        self.bn1 = make_norm(norm, spatial_dims, planes)
        self.act1 = make_act(act)
        self.conv2 = conv_type(planes, planes, 3, padding=1, bias=False, **kw)
        self.bn2 = make_norm(norm, spatial_dims, planes)
        self.act2 = make_act(act)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, planes, *spatial / stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + identity)


class CrossDBottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 Cross-D convs with a residual connection (torchvision ``Bottleneck``, v1.5).

    Same arguments as :class:`CrossDBasicBlock`; the output has ``planes * 4`` channels.
    """

    expansion = 4
    stride_on_1x1 = False  #: :class:`CrossDBottleneckV1` strides the first 1x1 conv instead of the 3x3

    def __init__(
        self,
        spatial_dims: int,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
        conv_kwargs: Mapping | None = None,
    ) -> None:
        super().__init__()
        conv_type, kw = _crossd(spatial_dims), check_conv_kwargs(conv_kwargs)
        out_planes = planes * self.expansion
        stride1, stride2 = (stride, 1) if self.stride_on_1x1 else (1, stride)
        self.conv1 = conv_type(in_planes, planes, 1, stride=stride1, bias=False, **kw)
        self.bn1 = make_norm(norm, spatial_dims, planes)
        self.act1 = make_act(act)
        self.conv2 = conv_type(planes, planes, 3, stride=stride2, padding=1, bias=False, **kw)
        self.bn2 = make_norm(norm, spatial_dims, planes)
        self.act2 = make_act(act)
        self.conv3 = conv_type(planes, out_planes, 1, bias=False, **kw)
        self.bn3 = make_norm(norm, spatial_dims, out_planes)
        self.act3 = make_act(act)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, 4 * planes, *spatial / stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + identity)


class CrossDBottleneckV1(CrossDBottleneck):
    """The original (Caffe / Keras) ResNet v1 bottleneck: the stride on the first 1x1 conv, not the 3x3.

    The block of Keras' ``ResNet50`` and so of RadImageNet's Keras weights, which
    :func:`~monai_crossd.converters.load_pretrained_2d` loads exactly only into blocks that stride there.
    """

    stride_on_1x1 = True


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": CrossDBasicBlock,
    "bottleneck": CrossDBottleneck,
    "bottleneck_v1": CrossDBottleneckV1,
}


class CrossDResNet(nn.Module):
    """ResNet with Cross-D convolutions for 2D ``(B, C, H, W)`` or 3D ``(B, C, D, H, W)`` inputs.

    torchvision's ResNet: a stem (``conv1`` 7x7 stride 2, ``bn1``, ``relu``, ``maxpool``), four stages
    ``layer1..4`` of residual blocks (shortcut ``downsample = (1x1 Cross-D conv, norm)`` where the shape
    changes), ``avgpool`` and ``fc``. All convolutions are Cross-D convs without bias. ``norm`` and
    ``act`` reach every normalisation and activation of the network: the stem and every block (the
    stem's activation keeps torchvision's name ``relu`` whatever ``act`` is). The rotation networks
    inside the Cross-D layers keep the paper's own BatchNorm and ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: outputs of ``fc``.
        block: ``"basic"``, ``"bottleneck"``, ``"bottleneck_v1"`` (stride on the first 1x1 conv, as Keras'
            ResNet50), or a block class with the signature of
            :class:`CrossDBasicBlock` and an ``expansion`` attribute.
        layers: number of blocks in each stage, e.g. ``(2, 2, 2, 2)`` for ResNet18.
        block_inplanes: width of each stage. Defaults to ``(64, 128, 256, 512)``.
        conv1_kernel_size: kernel size of the stem conv (odd). Defaults to 7.
        conv1_stride: stride of the stem conv. Defaults to 2.
        no_max_pool: skip the stem's max pooling. Defaults to False.
        norm: MONAI norm spec, e.g. ``"batch"``, ``"instance"``, ``("group", {"num_groups": 8})``.
            Defaults to ``"batch"``.
        act: MONAI act spec, e.g. ``"relu"``, ``("leakyrelu", {"negative_slope": 0.1})``. Defaults to ``"relu"``.
        conv_kwargs: extra :class:`~monai_crossd.networks.blocks.CrossDConv` arguments for every conv,
            e.g. ``{"rotation": False}`` or ``{"kernel_3d": "raw"}``. Defaults to None.
        feed_forward: add ``fc``; without it the network returns the pooled features
            ``(B, block_inplanes[-1] * expansion)``. Defaults to True.

    Example:
        >>> net = CrossDResNet(2, 3, 5, "basic", (1, 1, 1, 1), block_inplanes=(8, 16, 32, 64))
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 5])
        >>> net3d = CrossDResNet(3, 3, 5, "basic", (1, 1, 1, 1), block_inplanes=(8, 16, 32, 64))
        >>> net3d.load_state_dict(net.state_dict())
        <All keys matched successfully>
        >>> net3d(torch.randn(2, 3, 16, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        block: str | type[nn.Module],
        layers: Sequence[int],
        block_inplanes: Sequence[int] = (64, 128, 256, 512),
        conv1_kernel_size: int = 7,
        conv1_stride: int = 2,
        no_max_pool: bool = False,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
        conv_kwargs: Mapping | None = None,
        feed_forward: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` should be 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` should be a positive int, got {value!r}.")
        block_type = self._block_type(block)
        layers, block_inplanes = tuple(layers), tuple(block_inplanes)
        if len(layers) < 1 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"`layers` should be a non-empty sequence of positive ints, got {layers!r}.")
        if len(block_inplanes) != len(layers) or not all(isinstance(c, int) and c >= 1 for c in block_inplanes):
            raise ValueError(
                f"`block_inplanes` should have one positive int per stage ({len(layers)} = len(layers)), "
                f"got {block_inplanes!r}."
            )
        if isinstance(conv1_kernel_size, bool) or not isinstance(conv1_kernel_size, int) or conv1_kernel_size % 2 == 0:
            raise ValueError(f"`conv1_kernel_size` should be a positive odd int, got {conv1_kernel_size!r}.")
        if isinstance(conv1_stride, bool) or not isinstance(conv1_stride, int) or conv1_stride < 1:
            raise ValueError(f"`conv1_stride` should be a positive int, got {conv1_stride!r}.")
        kw = check_conv_kwargs(conv_kwargs)
        self.spatial_dims, self.norm, self.act, self.conv_kwargs = spatial_dims, norm, act, kw

        self.in_channels = in_channels
        self.in_planes = block_inplanes[0]
        self.conv1 = _crossd(spatial_dims)(
            in_channels, self.in_planes, conv1_kernel_size, stride=conv1_stride,
            padding=conv1_kernel_size // 2, bias=False, **kw,
        )  # fmt: skip
        self.bn1 = make_norm(norm, spatial_dims, self.in_planes)
        self.relu = make_act(act)
        self.maxpool = (
            nn.Identity() if no_max_pool else Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        )
        for i, (planes, blocks) in enumerate(zip(block_inplanes, layers, strict=True)):
            self.add_module(f"layer{i + 1}", self._make_layer(block_type, planes, blocks, 1 if i == 0 else 2))
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.out_features = block_inplanes[-1] * block_type.expansion
        self.fc = nn.Linear(self.out_features, num_classes) if feed_forward else None
        self.num_stages = len(layers)

    @staticmethod
    def _block_type(block: str | type[nn.Module]) -> type[nn.Module]:
        if isinstance(block, str):
            return BLOCKS[look_up(block.lower(), tuple(BLOCKS), "block")]
        if (
            isinstance(block, type)
            and issubclass(block, nn.Module)
            and isinstance(getattr(block, "expansion", None), int)
        ):
            return block
        raise TypeError(
            f"`block` should be a name in {tuple(BLOCKS)} or an nn.Module class with `expansion`, got {block!r}."
        )

    def _make_layer(self, block_type: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block_type.expansion
        downsample = None
        if stride != 1 or self.in_planes != out_planes:
            downsample = nn.Sequential(
                _crossd(self.spatial_dims)(
                    self.in_planes, out_planes, 1, stride=stride, bias=False, **self.conv_kwargs
                ),
                make_norm(self.norm, self.spatial_dims, out_planes),
            )
        args = dict(norm=self.norm, act=self.act, conv_kwargs=self.conv_kwargs)
        stage = [block_type(self.spatial_dims, self.in_planes, planes, stride, downsample, **args)]
        self.in_planes = out_planes
        stage += [block_type(self.spatial_dims, out_planes, planes, **args) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` or ``(B, C, D, H, W)`` -> ``(B, num_classes)`` (``(B, out_features)`` without ``fc``).

        Raises:
            TypeError: ``x`` is not a tensor.
            ValueError: ``x`` does not have ``spatial_dims + 2`` dimensions or ``in_channels`` channels.
        """
        check_input(x, self.spatial_dims, self.in_channels, type(self).__name__)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = self.avgpool(x).flatten(1)
        return x if self.fc is None else self.fc(x)


def crossd_resnet18(spatial_dims: int, in_channels: int, num_classes: int, **kwargs) -> CrossDResNet:
    """Cross-D ResNet18: basic blocks ``(2, 2, 2, 2)``. ``kwargs`` go to :class:`CrossDResNet`."""
    return CrossDResNet(spatial_dims, in_channels, num_classes, "basic", (2, 2, 2, 2), **kwargs)


def crossd_resnet34(spatial_dims: int, in_channels: int, num_classes: int, **kwargs) -> CrossDResNet:
    """Cross-D ResNet34: basic blocks ``(3, 4, 6, 3)``. ``kwargs`` go to :class:`CrossDResNet`."""
    return CrossDResNet(spatial_dims, in_channels, num_classes, "basic", (3, 4, 6, 3), **kwargs)


def crossd_resnet50(
    spatial_dims: int, in_channels: int, num_classes: int, block: str = "bottleneck", **kwargs
) -> CrossDResNet:
    """Cross-D ResNet50: bottleneck blocks ``(3, 4, 6, 3)``; ``block="bottleneck_v1"`` for Keras-layout weights
    (RadImageNet's Keras ResNet50). ``kwargs`` go to :class:`CrossDResNet`."""
    return CrossDResNet(spatial_dims, in_channels, num_classes, block, (3, 4, 6, 3), **kwargs)
