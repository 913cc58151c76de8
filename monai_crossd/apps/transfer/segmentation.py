"""Segmentation targets of the transfer study: MSD-layout NIfTI folders, a ResNet18 encoder-decoder, Dice.

:func:`~monai_crossd.apps.transfer.run_transfer` uses this module when its ``target`` is a folder in the Medical
Segmentation Decathlon layout (``<dir>/imagesTr/<case>.nii.gz`` + ``<dir>/labelsTr/<case>.nii.gz``, e.g. MSD
Task04 hippocampus):

- **Split**: the image/label pairs (:func:`~monai_crossd.apps.data.nifti_pairs.paired_nifti_datalist`, sorted by
  name) are shuffled with a fixed seed (0) and split 60/20/20 into train/val/test (:func:`split_cases`); a
  ``max_samples`` cap keeps the first cases of each split's shuffled order.
- **Preprocessing** (:func:`preprocess`): each volume is read with nibabel as stored (no reorientation, no
  resampling), its intensities are mapped linearly from its own 0.5th/99.5th percentiles to ``[-1, 1]`` and
  clipped (the classification path's ``[-1, 1]`` range), and image and label are centre-cropped/padded to one
  fixed size (:func:`center_crop_pad`; image padding -1, label padding 0; labels are never interpolated). The
  default size is the per-axis median of the cases' shapes rounded to the nearest multiple of 16
  (:func:`default_size`; 32x48x32 for hippocampus, which keeps 99.97 % of its foreground voxels).
- **Network** (:class:`SegmentationNet`): the 3D ResNet18 the classification study builds for each transfer
  method is the encoder (features after the stem and after ``layer1`` .. ``layer4``), with a small UNet-style
  decoder of ``Conv3d``/``BatchNorm3d``/``ReLU`` blocks trained from scratch.
- **Weak probing** (:func:`segmentation_weak_probing`): the encoder's normalisation layers and the whole
  decoder (with its 1x1x1 head) train, the segmentation analogue of the paper's "norms + final linear layer".
- **Metric** (:func:`dice_per_class`, :func:`segmentation_metrics`): per-class Dice of the argmax prediction on
  the preprocessed grid, for the foreground classes ``1 .. C-1``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_crossd.apps.data.nifti_pairs import paired_nifti_datalist
from monai_crossd.apps.probing import weak_probing

__all__ = [
    "SPLIT_FRACTIONS",
    "SPLIT_SEED",
    "SegmentationNet",
    "SegmentationTarget",
    "center_crop_pad",
    "class_names",
    "default_size",
    "dice_per_class",
    "load_segmentation_target",
    "preprocess",
    "segmentation_metrics",
    "segmentation_weak_probing",
    "split_cases",
]

#: train/val/test shares of the cases.
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
#: seed of the case shuffle before splitting.
SPLIT_SEED = 0
_STAGES = ("layer1", "layer2", "layer3", "layer4")


# ---------------------------------------------------------------------------------------------- data


def split_cases(items: Sequence, seed: int = SPLIT_SEED, max_samples: int | None = None) -> dict[str, list]:
    """Deterministic train/val/test split of ``items`` by :data:`SPLIT_FRACTIONS`.

    The items are shuffled with ``seed``; the first ``round(0.6 n)`` are train, the next ``round(0.2 n)`` val,
    the rest test (208 cases: 125/42/41). With ``max_samples``, each split keeps its first ``max_samples``
    items of that order. Each split is returned in the original order of ``items``.

    Args:
        items: the cases, e.g. a datalist sorted by name.
        seed: of the shuffle. Defaults to :data:`SPLIT_SEED`.
        max_samples: cap per split. Defaults to None (all).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    n = len(items)
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = round(SPLIT_FRACTIONS[0] * n), round(SPLIT_FRACTIONS[1] * n)
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {s: [items[i] for i in np.sort(idx[:max_samples])] for s, idx in parts.items()}


def center_crop_pad(array: np.ndarray, size: Sequence[int], value: float = 0) -> np.ndarray:
    """Centre-crop or pad (with ``value``) each axis of ``array`` to ``size``.

    An axis of length ``n`` cropped to ``s`` keeps ``[(n - s) // 2, (n - s) // 2 + s)``; padded, it gets
    ``(s - n) // 2`` values before and the rest after.

    Example:
        >>> center_crop_pad(np.arange(5), [3]).tolist(), center_crop_pad(np.arange(2), [5], -1).tolist()
        ([1, 2, 3], [-1, 0, 1, -1, -1])
    """
    if array.ndim != len(size):
        raise ValueError(f"`size` should have one entry per axis of `array` ({array.ndim}), got {list(size)}.")
    crop = tuple(slice(max((n - s) // 2, 0), max((n - s) // 2, 0) + s) for n, s in zip(array.shape, size))
    array = array[crop]
    pad = [((s - n) // 2, s - n - (s - n) // 2) for n, s in zip(array.shape, size)]
    return np.pad(array, pad, constant_values=value)


def default_size(shapes: Sequence[Sequence[int]], multiple: int = 16) -> list[int]:
    """Per-axis median of ``shapes`` rounded to the nearest multiple of ``multiple`` (at least ``multiple``).

    Example:
        >>> default_size([(35, 50, 36), (31, 40, 24), (43, 59, 47)])
        [32, 48, 32]
    """
    median = np.median(np.asarray(shapes, dtype=float), axis=0)
    return [max(multiple, math.floor(m / multiple + 0.5) * multiple) for m in median]


def preprocess(image: np.ndarray, label: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Intensities to ``[-1, 1]`` by the volume's 0.5/99.5 percentiles (clipped), then both to ``size``.

    Args:
        image: ``(D, H, W)`` intensities.
        label: ``(D, H, W)`` integer classes.
        size: the output ``(D, H, W)``.

    Returns:
        ``(image float32, label int64)`` of shape ``size``; image padding is -1, label padding 0.
    """
    image = image.astype(np.float32)
    low, high = np.percentile(image, (0.5, 99.5))
    scaled = (image - low) / (high - low) * 2.0 - 1.0 if high > low else np.zeros_like(image)
    image = np.clip(scaled, -1.0, 1.0).astype(np.float32)
    return center_crop_pad(image, size, -1.0), center_crop_pad(label.astype(np.int64), size, 0)


def class_names(data_dir: str | os.PathLike, num_classes: int) -> dict[str, str]:
    """Names of the foreground classes ``1 .. num_classes - 1``: from ``dataset.json`` if present, else the index.

    Both ``dataset.json`` label layouts are read: MSD (``{"0": "background", "1": "Anterior"}``) and nnU-Net v2
    (``{"background": 0, "Anterior": 1}``).
    """
    names = {str(c): str(c) for c in range(1, num_classes)}
    path = os.path.join(data_dir, "dataset.json")
    if os.path.isfile(path):
        with open(path) as f:
            labels = json.load(f).get("labels", {})
        for key, value in labels.items():
            index, name = (key, value) if str(key).isdigit() else (value, key)
            if str(index) in names:
                names[str(index)] = str(name)
    return names


def _read(path: str) -> np.ndarray:
    try:
        import nibabel
    except ImportError as e:  # pragma: no cover - an install without the io extra
        raise ImportError("segmentation targets need nibabel: pip install 'monai-crossd[io]'") from e
    return np.asanyarray(nibabel.load(path).dataobj)


def _shape(path: str) -> tuple[int, ...]:
    import nibabel

    return tuple(nibabel.load(path).shape)


@dataclass
class SegmentationTarget:
    """A loaded segmentation target.

    Attributes:
        data: ``{split: (images (N, 1, D, H, W) float32, labels (N, 1, D, H, W) int64)}``.
        cases: ``{split: [image file name, ...]}``.
        size: the common ``(D, H, W)``.
        num_classes: ``C``, background included.
        class_names: ``{"1": name, ...}`` of the foreground classes.
        foreground_kept: share of the foreground voxels of the loaded cases kept by the crop.
    """

    data: dict[str, tuple[torch.Tensor, torch.Tensor]]
    cases: dict[str, list[str]]
    size: list[int]
    num_classes: int
    class_names: dict[str, str]
    foreground_kept: float


def load_segmentation_target(
    data_dir: str | os.PathLike, size: Sequence[int] | None = None, max_samples: int | None = None
) -> SegmentationTarget:
    """Read, split (:func:`split_cases`) and preprocess (:func:`preprocess`) an MSD-layout folder.

    ``C`` is one more than the largest label of ``dataset.json`` if it has ``labels``, else one more than the
    largest label in the loaded cases (at least 2).

    Args:
        data_dir: folder with ``imagesTr/`` and ``labelsTr/``.
        size: common ``(D, H, W)``. Defaults to None (:func:`default_size` of all cases' shapes).
        max_samples: cap on cases per split. Defaults to None (all).

    Raises:
        ValueError: for a bad folder, an image and label of different shapes, or a non-integer/negative label.
    """
    items = paired_nifti_datalist(data_dir, split="all")
    if size is None:
        size = default_size([_shape(item["image"]) for item in items])
    size = [int(s) for s in size]
    splits = split_cases(items, max_samples=max_samples)
    data, cases, fg_total, fg_kept, top = {}, {}, 0, 0, 1
    for split, chosen in splits.items():
        xs, ys = [], []
        for item in chosen:
            image, label = _read(item["image"]), _read(item["label"])
            if image.shape != label.shape:
                raise ValueError(
                    f"image {item['image']!r} {image.shape} and label {item['label']!r} {label.shape} differ in shape."
                )
            rounded = np.rint(label)
            if not np.array_equal(rounded, label) or rounded.min() < 0:
                raise ValueError(f"label {item['label']!r} should hold non-negative integer classes.")
            x, y = preprocess(image, rounded, size)
            fg_total += int((rounded > 0).sum())
            fg_kept += int((y > 0).sum())
            top = max(top, int(y.max()), int(rounded.max()))
            xs.append(torch.from_numpy(x)[None])
            ys.append(torch.from_numpy(y)[None])
        data[split] = (torch.stack(xs), torch.stack(ys))
        cases[split] = [os.path.basename(item["image"]) for item in chosen]
    num_classes = top + 1
    json_path = os.path.join(data_dir, "dataset.json")
    if os.path.isfile(json_path):
        with open(json_path) as f:
            labels = json.load(f).get("labels", {})
        indices = [int(k) if str(k).isdigit() else int(v) for k, v in labels.items()]
        num_classes = max(num_classes, max(indices, default=0) + 1)
    return SegmentationTarget(
        data, cases, size, num_classes, class_names(data_dir, num_classes), fg_kept / fg_total if fg_total else 1.0
    )


# ------------------------------------------------------------------------------------------- metrics


def dice_per_class(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of each case and foreground class, ``2 |P & G| / (|P| + |G|)``.

    A class absent from both prediction and label of a case gives NaN (left out of means); absent from the
    label only, 0.

    Args:
        pred: ``(N, D, H, W)`` or ``(N, 1, D, H, W)`` predicted classes.
        labels: same shape, true classes.
        num_classes: ``C``; classes ``1 .. C-1`` are scored.

    Returns:
        ``(N, C - 1)`` float64.

    Example:
        >>> dice_per_class(torch.tensor([[1, 1, 0, 2]]), torch.tensor([[1, 0, 0, 0]]), 3)
        tensor([[0.6667, 0.0000]], dtype=torch.float64)
    """
    if pred.shape != labels.shape:
        raise ValueError(
            f"`pred` and `labels` should have one shape, got {tuple(pred.shape)} and {tuple(labels.shape)}."
        )
    pred, labels = pred.reshape(len(pred), -1), labels.reshape(len(labels), -1)
    out = torch.empty(len(pred), num_classes - 1, dtype=torch.float64)
    for c in range(1, num_classes):
        p, g = pred == c, labels == c
        inter = (p & g).sum(1).double()
        total = (p.sum(1) + g.sum(1)).double()
        out[:, c - 1] = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.full_like(total, float("nan")))
    return out


def segmentation_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``dice_<c>`` (mean over cases, NaN cases left out) for each foreground class and their mean ``mean_dice``.

    Args:
        logits: ``(N, C, D, H, W)``.
        labels: ``(N, 1, D, H, W)`` or ``(N, D, H, W)`` classes.
    """
    num_classes = int(logits.shape[1])
    dice = dice_per_class(logits.argmax(1), labels.reshape(len(labels), *logits.shape[2:]), num_classes).numpy()
    per_class = [float(np.nanmean(d)) if not np.isnan(d).all() else float("nan") for d in dice.T]
    valid = [d for d in per_class if not math.isnan(d)]
    out = {"mean_dice": float(np.mean(valid)) if valid else float("nan")}
    out.update({f"dice_{c + 1}": d for c, d in enumerate(per_class)})
    return out


# ------------------------------------------------------------------------------------------- network


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class _Decoder(nn.Module):
    """UNet-style decoder: upsample to each skip's size, concatenate, one conv block; a 1x1x1 head."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]
        ins = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(_block(i + s, o) for i, s, o in zip(ins, skips, decoder_channels, strict=True))
        self.head = nn.Conv3d(decoder_channels[-1], num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, features[-2::-1]):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


class SegmentationNet(nn.Module):
    """A 3D ResNet encoder (the transferred classification network) and a UNet-style decoder.

    The encoder's features are read by calling its submodules in order: ``relu(bn1(conv1(x)))`` (stride 2),
    then ``layer1(maxpool(.))``, ``layer2``, ``layer3``, ``layer4`` (strides 4 .. 32), the layout of both
    :class:`~monai_crossd.networks.nets.CrossDResNet` and a torchvision ResNet converted by
    :func:`~monai_crossd.converters.convert_to_3d`. Its ``avgpool`` and ``fc`` are replaced by ``nn.Identity``.
    The decoder (``self.decoder``, trained from scratch) upsamples trilinearly to each skip's shape,
    concatenates and applies ``Conv3d(3) -> BatchNorm3d -> ReLU``; a ``Conv3d(1)`` head gives ``num_classes``
    logits at stride 2, upsampled trilinearly to the input size, so any input size works.

    Args:
        encoder: the 3D ResNet; modified in place (``avgpool``/``fc``).
        num_classes: output channels, background included.
        encoder_channels: channels after the stem and after each stage. Defaults to ResNet18's.
        decoder_channels: output channels of the four decoder blocks, deepest first. Defaults to ``(128, 64, 32, 16)``.

    Example:
        >>> from monai_crossd.networks.nets import crossd_resnet18
        >>> net = SegmentationNet(crossd_resnet18(3, 1, 1), num_classes=3)
        >>> net(torch.randn(1, 1, 35, 50, 36)).shape
        torch.Size([1, 3, 35, 50, 36])
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        encoder_channels: Sequence[int] = (64, 64, 128, 256, 512),
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
    ) -> None:
        super().__init__()
        missing = [
            n
            for n in ("conv1", "bn1", "relu", "maxpool", *_STAGES)
            if not isinstance(getattr(encoder, n, None), nn.Module)
        ]
        if missing:
            raise ValueError(
                f"`encoder` should have the ResNet submodules conv1, bn1, relu, maxpool, layer1..4; {type(encoder).__name__} lacks {missing}."
            )
        if len(encoder_channels) != 5 or len(decoder_channels) != 4:
            raise ValueError(
                f"`encoder_channels` should have 5 entries and `decoder_channels` 4, got {list(encoder_channels)} and {list(decoder_channels)}."
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` should be an int >= 2, got {num_classes!r}.")
        encoder.avgpool, encoder.fc = nn.Identity(), nn.Identity()
        self.encoder = encoder
        self.decoder = _Decoder(encoder_channels, decoder_channels, num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder features of ``x`` ``(B, C_in, D, H, W)``, strides 2, 4, 8, 16, 32."""
        e = self.encoder
        x = e.relu(e.bn1(e.conv1(x)))
        out = [x]
        x = e.maxpool(x)
        for name in _STAGES:
            x = getattr(e, name)(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, D, H, W)`` -> ``(B, num_classes, D, H, W)`` logits."""
        if x.ndim != 5:
            raise ValueError(f"`x` should be (B, C, D, H, W), got shape {tuple(x.shape)}.")
        logits = self.decoder(self.features(x))
        return F.interpolate(logits, size=x.shape[2:], mode="trilinear", align_corners=False)


def segmentation_weak_probing(model: SegmentationNet) -> list[nn.Parameter]:
    """Weak probing for segmentation: the encoder's normalisation layers and the whole decoder train.

    The decoder and its head are new and the segmentation counterpart of the classifier's final linear layer,
    so this is :func:`~monai_crossd.apps.probing.weak_probing` with ``classifier="decoder"``: every conv of the
    encoder (the transferred knowledge) is frozen, Cross-D rotation networks included.

    Returns:
        the trainable parameters.
    """
    return weak_probing(model, classifier="decoder")
