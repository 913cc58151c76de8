"""The Fourier shifting operation of Cross-D Conv (Yavuz & Yang, arXiv 2411.02441, Eqs. 2-8), without FFT.

The paper rotates the frequency grid of the 3D knowledge base ``U`` with a linearised rotation
``R = I + theta [k]x`` and multiplies its spectrum by ``exp(-2 pi i (f'_x + f'_y + f'_z))`` with
``f' = R f``. Because ``f'_x + f'_y + f'_z = (R^T 1) . f``, the phase factor is separable:
``Phi(f) = prod_j exp(-2 pi i d_j f_j)`` with ``d = R^T (1, 1, 1)``. The shifted kernel
``U' = Re(iFFT(FFT(U) Phi))`` is therefore ``U`` circularly translated by the (fractional) vector
``d``, one ``K x K`` operator per kernel axis and per sample:

    S_j[m, a] = 1/K sum_f exp(2 pi i f (m - a - d_j)),  f in fftfreq(K)

For odd ``K`` the frequencies are symmetric and ``S_j`` is real. For even ``K`` the Nyquist
frequency has no partner, ``S_j`` is complex, and the real part of the triple product is taken
exactly as the paper's ``.real`` does. At ``theta = 0`` ``d = (1, 1, 1)``: a roll by one voxel.

All functions here are pure and differentiable; no complex tensor is created.
"""

from __future__ import annotations

import math

import torch

from monai_crossd.networks.layers.per_sample_conv import mix_kernel

__all__ = [
    "apply_shift",
    "axis_angle_from_params",
    "knowledge_base_from_2d",
    "linear_rotation_matrix",
    "shift_from_axis_angle",
    "shift_from_rotation",
    "shift_kernel",
    "shift_matrix",
    "shift_operators",
]


def axis_angle_from_params(params: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn the aggregated rotation-network output into an axis and an angle (paper, Sec. III-A).

    Args:
        params: ``(B, 4)`` raw ``(k_x, k_y, k_z, theta)`` per sample.
        eps: added to the axis norm before division. Defaults to 1e-8 (the authors' value).

    Returns:
        axis ``(B, 3)`` normalised to unit length and angle ``(B,)`` in ``[-pi/4, pi/4]``.
    """
    if params.ndim != 2 or params.shape[-1] != 4:
        raise ValueError(f"`params` should have shape (B, 4), got {tuple(params.shape)}.")
    k = params[:, :3]
    axis = k / (k.norm(dim=1, keepdim=True) + eps)
    angle = torch.tanh(params[:, 3]) * (math.pi / 4)
    return axis, angle


def linear_rotation_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Linearised Rodrigues rotation ``R = I + theta [k]x`` (paper, Eq. 3).

    Args:
        axis: ``(B, 3)`` rotation axes.
        angle: ``(B,)`` angles in radians.

    Returns:
        ``(B, 3, 3)`` matrices.
    """
    kx, ky, kz = axis.unbind(dim=1)
    zero = torch.zeros_like(kx)
    skew = torch.stack(
        [torch.stack([zero, -kz, ky], -1), torch.stack([kz, zero, -kx], -1), torch.stack([-ky, kx, zero], -1)], -2
    )
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + angle[:, None, None] * skew


def shift_from_rotation(rotation: torch.Tensor) -> torch.Tensor:
    """The translation ``d = R^T (1, 1, 1)`` that the phase factor of Eq. 7 applies to the kernel.

    Args:
        rotation: ``(B, 3, 3)`` matrices ``R``.

    Returns:
        ``(B, 3)``: the shift along kernel axes ``(0, 1, 2)``, i.e. ``(depth, height, width)``.
    """
    return rotation.sum(dim=-2)


def knowledge_base_from_2d(weight: torch.Tensor, depth_init: str = "zeros") -> torch.Tensor:
    """A 2D kernel ``(A, B, K, K)`` as a knowledge base ``(A, B, K, K, K)`` whose shifted kernel at ``R = I`` has it
    as its middle plane: the one place where a 2D kernel is placed (layers, converters, checkpoint loading).

    At ``R = I`` the shifted kernel is the knowledge base rolled by one voxel on each axis, so the middle plane
    ``K // 2`` of the shifted kernel is plane ``K // 2 - 1`` of the knowledge base rolled in-plane: ``weight`` is
    rolled back by ``(-1, -1)`` into that plane. ``depth_init="zeros"`` leaves the other planes zero (in 3D: the 2D
    kernel on every depth slice); ``"replicate"`` repeats the plane along depth (I3D-style, without ``1 / K``).

    Args:
        weight: ``(A, B, K, K)`` (a conv's ``(O, I / groups, K, K)`` or a transposed conv's ``(I, O / groups, K, K)``).
        depth_init: ``"zeros"`` or ``"replicate"``. Defaults to ``"zeros"``.

    Returns:
        ``(A, B, K, K, K)``, a new tensor.

    Example:
        >>> w = torch.randn(2, 3, 3, 3)
        >>> u = knowledge_base_from_2d(w)
        >>> torch.equal(torch.roll(u, (1, 1, 1), (2, 3, 4))[:, :, 1], w)
        True
    """
    if depth_init not in ("zeros", "replicate"):
        raise ValueError(f"`depth_init` should be 'zeros' or 'replicate', got {depth_init!r}.")
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"`weight` should be (A, B, K, K), got shape {tuple(weight.shape)}.")
    k = weight.shape[-1]
    plane = torch.roll(weight, shifts=(-1, -1), dims=(2, 3))
    if depth_init == "replicate":
        return plane.unsqueeze(2).repeat(1, 1, k, 1, 1)
    out = weight.new_zeros(*weight.shape[:2], k, k, k)
    out[:, :, (k // 2 - 1) % k] = plane
    return out


def shift_from_axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``d = R^T (1, 1, 1)`` for ``R = I + theta [k]x`` in closed form: ``d = 1 + theta ((1, 1, 1) x k)``.

    The column sums of ``[k]x`` are ``(k_z - k_y, k_x - k_z, k_y - k_x)``; equal to
    ``shift_from_rotation(linear_rotation_matrix(axis, angle))`` (tested) in a handful of operations
    instead of building the ``(B, 3, 3)`` matrices.

    Args:
        axis: ``(B, 3)`` rotation axes ``(k_x, k_y, k_z)``.
        angle: ``(B,)`` angles in radians.

    Returns:
        ``(B, 3)``: the shift along kernel axes ``(0, 1, 2)``.
    """
    cross = axis[:, [2, 0, 1]] - axis[:, [1, 2, 0]]  # (1, 1, 1) x k
    return torch.addcmul(torch.ones_like(axis), angle[:, None], cross)


def shift_operators(shift: torch.Tensor, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Circular fractional-shift operators ``S_j = iDFT diag(exp(-2 pi i d_j f)) DFT`` in closed form.

    Args:
        shift: ``(B, A)`` shifts ``d`` along ``A`` kernel axes.
        kernel_size: ``K``.

    Returns:
        ``(real, imag)``, each ``(B, A, K, K)`` with ``S[m, a]`` acting as ``U'[m] = sum_a S[m, a] U[a]``;
        ``imag`` is ``None`` for odd ``K`` (the operator is real then).
    """
    k = kernel_size
    # a (B, 3, K, K) table: built in float64 (unless on a device without it) so that the float32
    # kernel carries only the rounding of its own contractions
    out_dtype = shift.dtype if shift.dtype in (torch.float32, torch.float64) else torch.float32
    dtype = torch.float32 if shift.device.type == "mps" else torch.float64
    # fftfreq(K) and m - a as constant tables (static sizes: exportable to ONNX and traceable)
    n = torch.arange(k, dtype=dtype, device=shift.device)
    freq = torch.remainder(n + k // 2, k).sub_(k // 2).div_(k)
    diff = n[:, None] - n[None, :]
    # phase[b, j, m, a, f] = 2 pi f (m - a - d_j)
    phase = (2 * math.pi) * (diff[None, None, :, :, None] - shift.to(dtype)[:, :, None, None, None]) * freq
    real = torch.cos(phase).mean(dim=-1).to(out_dtype)
    imag = torch.sin(phase).mean(dim=-1).to(out_dtype) if k % 2 == 0 else None
    return real, imag


def shift_matrix(real: torch.Tensor, imag: torch.Tensor | None, plane: int | None = None) -> torch.Tensor:
    """The three per-axis operators fused into one real matrix per sample: ``Re(S_0 (x) S_1 (x) S_2)``.

    ``U'[p] = sum_q M[p, q] U[q]`` with ``q`` running over the ``K^3`` kernel taps of ``U`` (row-major
    ``(depth, height, width)``) and ``p`` over the taps of the output kernel. Applying ``M`` is one GEMM
    over the whole knowledge base instead of three contractions with tiny matrices, and the same
    matrix can mix the taps of an unfolded input instead (see
    :func:`monai_crossd.networks.layers.per_sample_conv.per_sample_mixed_conv`).

    Args:
        real: ``(B, 3, K, K)`` real parts of the operators from :func:`shift_operators`.
        imag: ``(B, 3, K, K)`` imaginary parts, or ``None`` when they vanish (odd ``K``).
        plane: if given, only the rows of plane ``plane`` of the first kernel axis (the 2D kernel).

    Returns:
        ``(B, K^2, K^3)`` with ``plane``, else ``(B, K^3, K^3)``.
    """

    def kron(a: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        # m[b, d, h, w, x, y, z] = a[b, d, x] s1[b, h, y] s2[b, w, z], by broadcasting (no einsum:
        # static shapes keep the ONNX export valid)
        return a[:, :, None, None, :, None, None] * s1[:, None, :, None, None, :, None] * s2[:, None, None, :, None, None, :]

    r0 = real[:, 0, plane : plane + 1] if plane is not None else real[:, 0]
    m = kron(r0, real[:, 1], real[:, 2])
    if imag is not None:
        # Re(a b c) for complex a, b, c: the real product minus the three products with two imaginary parts
        i0 = imag[:, 0, plane : plane + 1] if plane is not None else imag[:, 0]
        m = m - kron(r0, imag[:, 1], imag[:, 2]) - kron(i0, real[:, 1], imag[:, 2]) - kron(i0, imag[:, 1], real[:, 2])
    return m.flatten(4).flatten(1, 3)  # flatten, not reshape with sizes: keeps the ONNX export static


def apply_shift(
    weight: torch.Tensor, real: torch.Tensor, imag: torch.Tensor | None, plane: int | None = None
) -> torch.Tensor:
    """``U' = Re((S_0 x S_1 x S_2) U)`` per sample, optionally only one plane of the first kernel axis.

    Args:
        weight: the knowledge base ``U``, ``(O, I, K, K, K)``.
        real: ``(B, 3, K, K)`` real parts of the operators from :func:`shift_operators`.
        imag: ``(B, 3, K, K)`` imaginary parts, or ``None`` when they vanish (odd ``K``).
        plane: if given, only ``U'[:, :, :, plane]`` is built (the 2D kernel), at a third of the cost.

    Returns:
        ``(B, O, I, K, K)`` when ``plane`` is given, else ``(B, O, I, K, K, K)`` (contiguous).
    """
    k = weight.shape[2]
    imag = imag.to(weight.dtype) if imag is not None else None
    m = shift_matrix(real.to(weight.dtype), imag, plane)  # (B, P, K^3)
    return mix_kernel(weight, m, (k,) * (2 if plane is not None else 3))


def shift_kernel(weight: torch.Tensor, shift: torch.Tensor, plane: int | None = None) -> torch.Tensor:
    """Circularly translate the knowledge base by per-sample fractional shifts (paper, Eqs. 4-8).

    Args:
        weight: ``(O, I, K, K, K)`` knowledge base ``U``.
        shift: ``(B, 3)`` shifts ``d = R^T (1, 1, 1)``.
        plane: index on the first kernel axis to extract (``K // 2`` gives the paper's 2D kernel).

    Returns:
        ``(B, O, I, K, K)`` with ``plane``, else ``(B, O, I, K, K, K)``.

    Example:
        >>> w = torch.randn(8, 4, 3, 3, 3)
        >>> shift_kernel(w, torch.ones(2, 3), plane=1).shape
        torch.Size([2, 8, 4, 3, 3])
    """
    if weight.ndim != 5 or not (weight.shape[2] == weight.shape[3] == weight.shape[4]):
        raise ValueError(f"`weight` should have shape (O, I, K, K, K), got {tuple(weight.shape)}.")
    if shift.ndim != 2 or shift.shape[1] != 3:
        raise ValueError(f"`shift` should have shape (B, 3), got {tuple(shift.shape)}.")
    real, imag = shift_operators(shift, weight.shape[2])
    return apply_shift(weight, real, imag, plane)
