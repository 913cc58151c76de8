"""Cross-D Conv: one learnable 3D knowledge base serving 2D and 3D convolutions.

Yavuz & Yang, "Cross-D Conv: Cross-Dimensional Transferable Knowledge Base via Fourier Shifting
Operation", arXiv 2411.02441. A rotation network reads the input and predicts, per sample, an axis
and an angle; the knowledge base ``U`` is phase-shifted in the Fourier domain accordingly (computed
here as an exact fractional circular shift, see :mod:`monai_crossd.networks.layers.fourier_shift`).
2D inputs are convolved with the middle plane of the shifted kernel, 3D inputs with all of it, so a
2D-trained layer is a 3D layer with the same ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_crossd.networks.layers.conv_args import PADDING_MODES, conv_tuple, expand_2d_to_3d, padding_pairs
from monai_crossd.networks.layers.fourier_shift import (
    axis_angle_from_params,
    knowledge_base_from_2d,
    shift_from_axis_angle,
    shift_kernel,
    shift_matrix,
    shift_operators,
)
from monai_crossd.networks.layers.per_sample_conv import per_sample_conv, per_sample_mixed_conv
from monai_crossd.networks.layers.softmax_pool import bn_mlp_softmax_pool, mlp_softmax_pool, softmax_pool
from monai_crossd.utils import look_up

__all__ = ["CrossDConv", "CrossDConv2d", "CrossDConv3d", "RotationNetwork"]

KERNEL_3D_MODES = ("shifted", "raw")
DEPTH_INITS = ("zeros", "replicate")
ROTATION_INITS = ("random", "identity")


class RotationNetwork(nn.Sequential):
    """The paper's rotation network: 1x1 conv ``in -> 16``, BatchNorm, ReLU, 1x1 conv ``16 -> 4``, then Eq. 1.

    The parameters are those of 2D pointwise layers (``Conv2d`` 1x1, ``BatchNorm2d``), so the 2D and 3D
    layers share one ``state_dict``; the computation is two GEMMs over the ``(B, C, N)`` view of the input
    (any number of spatial dims), which is exactly the pointwise result, BatchNorm statistics included.
    The positions are processed in cache-sized chunks so that the ``(B, 16, N)`` hidden layer is never
    stored (:mod:`monai_crossd.networks.layers.softmax_pool`): in inference BatchNorm is folded into the
    first layer, in training its batch statistics come from a first chunked pass and the running
    statistics are updated as ``nn.BatchNorm2d`` does.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 16) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 1),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, 4, 1),
        )

    def _form(self, x: torch.Tensor) -> str:
        """``"inference"`` (running statistics, no gradient), ``"training"`` (batch statistics) or ``"plain"``.

        The chunked forms run in eager mode without autocast; the plain form (the layers one after the other,
        as GEMMs) serves tracing, ``torch.compile`` and autocast. The training form's backward is
        ``once_differentiable`` (no double backward through the rotation network).
        """
        bn = self[1]
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return "plain"
        if torch.is_autocast_enabled(x.device.type) or not bn.affine:
            return "plain"
        if not (bn.training or bn.running_mean is None):
            grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
            return "plain" if grad else "inference"
        return "training" if x.shape[0] * x[0, 0].numel() > 1 else "plain"  # one value: BatchNorm's own error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, 4)``: the softmax-weighted spatial sum of each output map (Eq. 1)."""
        conv1, bn, _, conv2 = self
        form = self._form(x)
        if form != "plain":
            x = x.as_subclass(torch.Tensor)  # MONAI's MetaTensor: plain GEMMs into reused buffers
        xv = x.reshape(x.shape[0], x.shape[1], -1)  # a view for contiguous inputs
        w1, w2 = conv1.weight.flatten(1), conv2.weight.flatten(1)
        if form == "inference":
            scale = torch.rsqrt(bn.running_var + bn.eps) * bn.weight
            shift = (conv1.bias - bn.running_mean) * scale + bn.bias
            return mlp_softmax_pool(xv, w1 * scale[:, None], shift, w2, conv2.bias)
        if form == "training":
            out, mean, var = bn_mlp_softmax_pool(xv, w1, conv1.bias, bn.weight, bn.bias, w2, conv2.bias, bn.eps)
            if bn.track_running_stats and bn.training:  # as nn.BatchNorm2d updates them (unbiased variance)
                with torch.no_grad():
                    bn.num_batches_tracked.add_(1)
                    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                    count = xv.shape[0] * xv.shape[2]
                    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
                    bn.running_var.lerp_((var * count / (count - 1)).to(bn.running_var.dtype), factor)
            return out
        hidden = torch.matmul(w1, xv) + conv1.bias[:, None]  # (B, H, N)
        # the module itself (running stats, momentum); ReLU in place on its output, not on a view of it (an
        # in-place op on a view costs an as_strided copy in backward)
        hidden = bn(hidden.unsqueeze(-1)).relu_().squeeze(-1)
        maps = torch.matmul(w2, hidden) + conv2.bias[:, None]  # (B, 4, N)
        return softmax_pool(maps)

    def reset_to_identity(self) -> None:
        """Make the predicted angle zero for every input (``R = I``) with a fixed axis along the first
        kernel axis, so that gradients for the axis are well defined once the angle moves."""
        last = self[3]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))


class CrossDConv(nn.Module):
    """Cross-D convolution for 2D (``(B, C, H, W)``) or 3D (``(B, C, D, H, W)``) inputs.

    Parameters look like a 3D convolution's (``weight`` ``(O, C / groups, K, K, K)`` and ``bias``) plus
    ``rotation_net``. The first kernel axis is the through-plane (depth) axis: in 3D it runs along the
    first spatial dimension ``D``, and the 2D kernel is the middle plane ``K // 2`` of that axis.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of input channels ``C``.
        out_channels: number of output channels ``O``.
        kernel_size: ``K``, an int or a sequence of equal ints (the knowledge base is cubic).
        stride: as ``nn.Conv2d``/``nn.Conv3d``. Defaults to 1.
        padding: an int, a sequence of ``spatial_dims`` ints, ``"same"`` or ``"valid"``. Defaults to 0.
        dilation: as ``nn.Conv2d``/``nn.Conv3d``. Defaults to 1.
        groups: as ``nn.Conv2d``/``nn.Conv3d``. Defaults to 1.
        bias: add a learnable bias. Defaults to True.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``. Defaults to ``"zeros"``.
        rotation: predict a rotation per sample (the paper). ``False`` gives ``R = I``: a static
            kernel, the knowledge base rolled by one voxel on each axis. Defaults to True.
        kernel_3d: for 3D inputs, ``"shifted"`` convolves with the shifted knowledge base ``U'`` (whose
            middle plane is the 2D kernel); ``"raw"`` reproduces the authors' 3D protocol: ``U`` used
            as a plain ``Conv3d`` weight, no rotation. Defaults to ``"shifted"``.
        rotation_channels: hidden width of the rotation network. Defaults to 16 (the paper).
        rotation_init: ``"random"`` initialises the rotation network like the authors' layer (PyTorch's
            defaults): every sample gets a random rotation, hence a randomly shifted kernel, from the first
            step. ``"identity"`` zeroes its last layer's weight and sets its bias to ``(1, 0, 0, 0)`` (see
            :meth:`RotationNetwork.reset_to_identity`): ``R = I`` for every input at initialisation, so the
            layer starts as a static convolution and learns the rotations from there. In our 2D ResNet18
            check (BreastMNIST + PneumoniaMNIST, 3 epochs, one seed) ``"identity"`` reached validation
            balanced accuracy 0.83 against 0.54 for ``"random"`` (plain ResNet18: 0.85). Defaults to
            ``"random"`` (the paper's layer).

    Example:
        >>> layer = CrossDConv(2, in_channels=4, out_channels=8, kernel_size=3, padding=1)
        >>> layer(torch.randn(2, 4, 32, 32)).shape
        torch.Size([2, 8, 32, 32])
        >>> volume = CrossDConv(3, 4, 8, 3, padding=1)
        >>> volume.load_state_dict(layer.state_dict())
        <All keys matched successfully>
        >>> volume(torch.randn(2, 4, 16, 32, 32)).shape
        torch.Size([2, 8, 16, 32, 32])
    """

    transposed = False  #: :class:`CrossDConvTranspose` sets True: weight layout and ``from_conv``'s source type

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | str = 0,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        rotation: bool = True,
        kernel_3d: str = "shifted",
        rotation_channels: int = 16,
        rotation_init: str = "random",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` should be 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` should be a positive int, got {value!r}.")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"`in_channels` ({in_channels}) and `out_channels` ({out_channels}) should be divisible by "
                f"`groups` ({groups})."
            )
        ks = tuple(kernel_size) if isinstance(kernel_size, Sequence) else (kernel_size,)
        if len(set(ks)) != 1 or not isinstance(ks[0], int) or isinstance(ks[0], bool) or ks[0] < 1:
            raise ValueError(f"`kernel_size` should be a positive int or equal ints (a cubic kernel), got {kernel_size!r}.")
        self.spatial_dims = spatial_dims
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ks[0]
        self.stride = conv_tuple(stride, spatial_dims, "stride")
        self.dilation = conv_tuple(dilation, spatial_dims, "dilation")
        if isinstance(padding, str):
            padding = look_up(padding, ("same", "valid"), "padding")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"`padding='same'` needs `stride` 1, got {stride!r}.")
        else:
            padding = conv_tuple(padding, spatial_dims, "padding")
        self.padding = padding
        self.padding_mode = look_up(padding_mode, PADDING_MODES, "padding_mode")
        self.rotation = bool(rotation)
        self.kernel_3d = look_up(kernel_3d, KERNEL_3D_MODES, "kernel_3d")
        self.rotation_init = look_up(rotation_init, ROTATION_INITS, "rotation_init")

        k = self.kernel_size
        # a transposed layer stores its knowledge base as nn.ConvTranspose3d does: (in, out / groups, K, K, K)
        pair = (in_channels, out_channels // groups) if self.transposed else (out_channels, in_channels // groups)
        self.weight = nn.Parameter(torch.empty(*pair, k, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.rotation_net = RotationNetwork(in_channels, rotation_channels)
        # fan over the output channels and taps (dim 0 of a conv weight, dim 1 of a transposed one)
        nn.init.kaiming_normal_(self.weight, mode="fan_in" if self.transposed else "fan_out", nonlinearity="relu")
        if self.rotation_init == "identity":
            self.rotation_net.reset_to_identity()

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"padding_mode={self.padding_mode!r}, rotation={self.rotation}, kernel_3d={self.kernel_3d!r}, "
            f"rotation_init={self.rotation_init!r}"
        )

    def _plane(self) -> int | None:
        return self.kernel_size // 2 if self.spatial_dims == 2 else None

    def predict_shift(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample shift ``d = R^T (1, 1, 1)`` from the rotation network, ``(B, 3)``."""
        params = self.rotation_net(x)
        if params.dtype in (torch.float16, torch.bfloat16):
            params = params.float()  # trigonometry and normalisation in full precision under autocast
        return shift_from_axis_angle(*axis_angle_from_params(params))  # = R^T 1 with R = I + theta [k]x

    @property
    def is_static(self) -> bool:
        """One kernel for every sample: ``rotation=False`` (``R = I``), or a 3D layer with ``kernel_3d="raw"``.

        A ``1 x 1`` layer is not static by this definition although no shift changes a single tap: its rotation
        network runs (as in the authors' layer) and gets zero gradients; skipping it would leave parameters without
        gradients, which ``DistributedDataParallel`` refuses (measured with the bundles' multi-GPU configs).
        """
        return not self.rotation or (self.spatial_dims == 3 and self.kernel_3d == "raw")

    def static_kernel(self) -> torch.Tensor:
        """The kernel at ``R = I``: ``U`` rolled by one voxel on each axis (its middle plane in 2D).

        Returns:
            ``(O, C / groups, K, K)`` for ``spatial_dims=2``, ``(O, C / groups, K, K, K)`` for 3.
        """
        if self.spatial_dims == 3 and self.kernel_3d == "raw":
            return self.weight
        k = self.kernel_size
        if self.spatial_dims == 2:  # plane K // 2 of U rolled by one voxel is plane K // 2 - 1 of U, rolled in-plane
            return torch.roll(self.weight[:, :, (k // 2 - 1) % k], shifts=(1, 1), dims=(2, 3))
        return torch.roll(self.weight, shifts=(1, 1, 1), dims=(2, 3, 4))

    def _math_dtype(self) -> torch.dtype:
        """The shift maths run in at least float32 (a float16 / bfloat16 layer casts the results back)."""
        return torch.promote_types(self.weight.dtype, torch.float32)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The kernels applied to ``x``: ``(B, O, C / groups, K, K[, K])``, or a shared static kernel."""
        if self.is_static:
            return self.static_kernel()
        dtype = self._math_dtype()
        kernels = shift_kernel(self.weight.to(dtype), self.predict_shift(x).to(dtype), plane=self._plane())
        return kernels.to(self.weight.dtype)

    def _padding(self) -> tuple[tuple[int, int], ...]:
        return padding_pairs(self.padding, self.kernel_size, self.dilation)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`x` should be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != self.spatial_dims + 2:
            layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise ValueError(
                f"`x` should be {self.spatial_dims + 2}D {layout} for spatial_dims={self.spatial_dims}, "
                f"got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"`x` should have {self.in_channels} channels (dim 1), got shape {tuple(x.shape)}.")
        span = [d * (self.kernel_size - 1) + 1 for d in self.dilation]
        padded = [s + lo + hi for s, (lo, hi) in zip(x.shape[2:], self._padding())]
        if not self.transposed and any(p < k for p, k in zip(padded, span)):
            raise ValueError(
                f"`x` of spatial shape {tuple(x.shape[2:])} (padded: {tuple(padded)}) is smaller than the "
                f"{'dilated ' if max(self.dilation) > 1 else ''}kernel ({tuple(span)}) of {type(self).__name__}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, O, H', W')`` or ``(B, C, D, H, W) -> (B, O, D', H', W')``.

        The shifted kernels are never built here: the knowledge base and the per-sample shift matrix
        go to :func:`~monai_crossd.networks.layers.per_sample_conv.per_sample_mixed_conv`, whose
        ``select_path`` (the one place where formulations are chosen per device) either materialises
        the ``B`` kernels for a grouped convolution or mixes the taps of the input patches instead.
        """
        self._check_input(x)
        if x.shape[0] == 0:  # an empty batch: an empty output of the right shape, as nn.ConvNd gives
            return per_sample_conv(F.pad(x, [p for pair in reversed(self._padding()) for p in pair]),
                                   self.static_kernel(), self.bias, self.stride, 0, self.dilation, self.groups)
        shift = None if self.is_static else self.predict_shift(x)  # the rotation network reads the unpadded input
        pads = self._padding()
        if self.padding_mode == "zeros" and all(lo == hi for lo, hi in pads):
            padding = tuple(lo for lo, _ in pads)
        else:
            flat = [p for pair in reversed(pads) for p in pair]
            x = F.pad(x, flat, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
            padding = 0
        args = (self.bias, self.stride, padding, self.dilation, self.groups)
        if shift is None:
            return per_sample_conv(x, self.static_kernel(), *args)
        real, imag = shift_operators(shift.to(self._math_dtype()), self.kernel_size)
        mix = shift_matrix(real, imag, self._plane()).to(self.weight.dtype)
        return per_sample_mixed_conv(x, self.weight, mix, *args)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, spatial_dims: int = 2, depth_init: str = "zeros", **kwargs
    ) -> CrossDConv:
        """A Cross-D layer that computes what ``conv`` computes, at initialisation.

        The rotation network starts at ``R = I`` (its last layer's weight is zero), where the shifted
        kernel is ``U`` rolled by one voxel on each axis; ``conv.weight`` is placed (rolled back) in
        plane ``K // 2 - 1`` of ``U`` so that the middle plane of the shifted kernel is exactly
        ``conv.weight``. The other planes of ``U`` hold zeros (``depth_init="zeros"``: the 3D layer then
        applies ``conv`` to each depth slice) or copies of the same plane (``"replicate"``: the 3D
        kernel repeats the 2D one along depth, I3D-style inflation without the ``1 / K`` factor).

        Args:
            conv: an ``nn.Conv2d`` with a square kernel (``nn.ConvTranspose2d`` for :class:`CrossDConvTranspose`,
                whose weight ``(in, out / groups, K, K)`` goes into the knowledge base the same way).
            spatial_dims: of the returned layer. Defaults to 2.
            depth_init: ``"zeros"`` or ``"replicate"``. Defaults to ``"zeros"``.
            kwargs: other ``CrossDConv`` arguments (``rotation``, ``kernel_3d``, ...).

        Returns:
            the layer, on ``conv``'s device and dtype.
        """
        source = nn.ConvTranspose2d if cls.transposed else nn.Conv2d
        if not isinstance(conv, source):
            raise TypeError(f"`conv` should be an nn.{source.__name__}, got {type(conv).__name__}.")
        if conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"`conv` should have a square kernel, got kernel_size={conv.kernel_size}.")
        depth_init = look_up(depth_init, DEPTH_INITS, "depth_init")
        expand = expand_2d_to_3d if spatial_dims == 3 else tuple
        padding = conv.padding if isinstance(conv.padding, str) else expand(conv.padding)
        if cls.transposed:
            kwargs = {"output_padding": expand(conv.output_padding), **kwargs}
        if kwargs.setdefault("rotation_init", "identity") != "identity":
            raise ValueError(
                f"`rotation_init` should be 'identity' for from_conv (the layer starts at R = I to compute what `conv` "
                f"computes), got {kwargs['rotation_init']!r}."
            )
        layer = cls(
            spatial_dims,
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            stride=expand(conv.stride),
            padding=padding,
            dilation=expand(conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            **kwargs,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(knowledge_base_from_2d(conv.weight, depth_init))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer


class CrossDConv2d(CrossDConv):
    """:class:`CrossDConv` with ``spatial_dims=2`` fixed: the signature of ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int] | int, **kwargs) -> None:
        super().__init__(2, in_channels, out_channels, kernel_size, **kwargs)


class CrossDConv3d(CrossDConv):
    """:class:`CrossDConv` with ``spatial_dims=3`` fixed: the signature of ``nn.Conv3d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int] | int, **kwargs) -> None:
        super().__init__(3, in_channels, out_channels, kernel_size, **kwargs)
