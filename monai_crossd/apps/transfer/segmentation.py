"""Segmentation targets of the transfer study: MSD-layout NIfTI folders, a ResNet18 encoder-decoder, MONAI's Dice.

:func:`~monai_crossd.apps.transfer.run_transfer` uses this module when its ``target`` is a folder in the Medical
Segmentation Decathlon layout (``<dir>/imagesTr/<case>.nii.gz`` + ``<dir>/labelsTr/<case>.nii.gz``, e.g. Task04
hippocampus):

- **Split**: the image/label pairs (:func:`~monai_crossd.apps.data.nifti_pairs.paired_nifti_datalist`, sorted by
  name) split 60/20/20 into train/val/test by :func:`~monai_crossd.apps.data.split.split_datalist` (MONAI's
  ``partition_dataset``, seed 0); ``max_samples`` keeps the first cases (by name) of each split.
- **Preprocessing** (:func:`segmentation_transform`, MONAI transforms): ``LoadImaged`` with nibabel as stored (no
  reorientation, no resampling), intensities from the volume's 0.5th/99.5th percentiles to ``[-1, 1]`` and clipped
  (``ScaleIntensityRangePercentilesd``), image and label centre-cropped/padded to one size
  (``ResizeWithPadOrCropd``; image padding -1, label padding 0; labels never interpolated). The default size is
  the per-axis median of the cases' shapes rounded to the nearest multiple of 16 (:func:`default_size`; 32x48x32
  for hippocampus, which keeps 99.97 % of its foreground voxels).
- **Network** (:class:`SegmentationNet`): the 3D ResNet18 each transfer method builds is the encoder (features after
  the stem and after ``layer1`` .. ``layer4``); a small UNet-style decoder of MONAI ``Convolution`` blocks trains
  from scratch. Weak probing (classifier :data:`CLASSIFIER`) trains the encoder's norms and the decoder.
- **Metric**: MONAI's ``MeanDice`` of the argmax prediction on the preprocessed grid, per foreground class (mean over
  cases) and ``mean_dice`` (mean over each case's classes, then over cases; it picks the epoch); a class absent from a
  case's label is left out of that case (MONAI's ``ignore_empty``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import CacheDataset
from monai.handlers import MeanDice, from_engine
from monai.losses import DiceCELoss
from monai.networks.blocks import Convolution
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureTyped,
    Lambda,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
)
from torch import nn

from monai_crossd.apps.bundle.metrics import PerClassMetrics
from monai_crossd.apps.data.checks import CheckedLoadImaged
from monai_crossd.apps.data.nifti_pairs import paired_nifti_datalist
from monai_crossd.apps.data.split import split_datalist
from monai_crossd.apps.transfer.training import Task

__all__ = [
    "CLASSIFIER",
    "SPLIT_RATIOS",
    "SPLIT_SEED",
    "SegmentationNet",
    "class_names",
    "default_size",
    "segmentation_task",
    "segmentation_transform",
]

#: train/val/test shares of the cases and the seed of their split.
SPLIT_RATIOS, SPLIT_SEED = (0.6, 0.2, 0.2), 0
#: the "classifier" of the probing protocols: weak probing trains the encoder's norms and the decoder with its head
CLASSIFIER = "decoder"
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def default_size(shapes: Sequence[Sequence[int]], multiple: int = 16) -> list[int]:
    """Per-axis median of ``shapes`` rounded to the nearest multiple of ``multiple`` (at least ``multiple``).

    Example:
        >>> default_size([(35, 50, 36), (31, 40, 24), (43, 59, 47)])
        [32, 48, 32]
    """
    median = np.median(np.asarray(shapes, dtype=float), axis=0)
    return [max(multiple, int(np.floor(m / multiple + 0.5)) * multiple) for m in median]


def _json_labels(data_dir: str | os.PathLike) -> dict[int, str]:
    """``{index: name}`` of ``dataset.json`` ``labels`` in the MSD (``{"1": "Anterior"}``) or nnU-Net v2 layout."""
    path = os.path.join(data_dir, "dataset.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        labels = json.load(f).get("labels", {})
    pairs = ((k, v) if str(k).isdigit() else (v, k) for k, v in labels.items())
    return {int(index): str(name) for index, name in pairs}


def class_names(data_dir: str | os.PathLike, num_classes: int) -> dict[str, str]:
    """Names of the foreground classes ``1 .. num_classes - 1``: from ``dataset.json`` if present, else the index."""
    names = _json_labels(data_dir)
    return {str(c): names.get(c, str(c)) for c in range(1, num_classes)}


def _check_case(d: dict) -> dict:
    """One shape for image and label, non-negative integer classes; the foreground voxels and top class before cropping."""
    image, label = d["image"], d["label"]
    if image.shape != label.shape:
        raise ValueError(f"case {d['case']!r}: image {tuple(image.shape)} and label {tuple(label.shape)} differ in shape.")
    if not torch.equal(label, label.round()) or label.min() < 0:
        raise ValueError(f"case {d['case']!r}: the label should hold non-negative integer classes.")
    return {**d, "foreground": int((label > 0).sum()), "top": int(label.max())}


def segmentation_transform(size: Sequence[int]) -> Compose:
    """Read a case ``{"image": path, "label": path, "case": name}`` and preprocess it to ``(1, *size)``."""
    return Compose(
        [
            CheckedLoadImaged(["image", "label"], reader="NibabelReader", image_only=True, ensure_channel_first=True),
            Lambda(_check_case),
            ScaleIntensityRangePercentilesd("image", lower=0.5, upper=99.5, b_min=-1.0, b_max=1.0, clip=True),
            ResizeWithPadOrCropd("image", size, value=-1.0),
            ResizeWithPadOrCropd("label", size),
            EnsureTyped(["image", "label"], track_meta=False),
        ]
    )


def segmentation_task(
    data_dir: str | os.PathLike, size: Sequence[int] | None = None, max_samples: int | None = None
) -> Task:
    """The :class:`~monai_crossd.apps.transfer.training.Task` of an MSD-layout folder (read, split, cached).

    ``C`` is one more than the largest class in ``dataset.json`` ``labels`` or in the loaded cases (at least 2).

    Args:
        data_dir: folder with ``imagesTr/`` and ``labelsTr/``.
        size: common ``(D, H, W)``. Defaults to None (:func:`default_size` of all cases' shapes).
        max_samples: cap on cases per split. Defaults to None (all).

    Raises:
        ValueError: for a bad folder, unreadable file, an image and label of different shapes, or a non-integer or
            negative label.
    """
    import nibabel

    items = [{**i, "case": os.path.basename(i["image"])} for i in paired_nifti_datalist(data_dir, split="all")]
    size = [int(s) for s in size] if size is not None else default_size([nibabel.load(i["image"]).shape for i in items])
    parts = split_datalist(items, SPLIT_RATIOS, SPLIT_SEED)
    transform = segmentation_transform(size)
    try:
        datasets = {
            s: CacheDataset(p[:max_samples], transform, progress=False, copy_cache=False)
            for s, p in zip(("train", "val", "test"), parts)
        }
    except RuntimeError as e:  # MONAI wraps a transform's error: raise the ValueError naming the case and file
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, ValueError):
            cause = cause.__cause__
        if isinstance(cause, ValueError):
            raise cause from None
        raise
    cases = [d[i] for d in datasets.values() for i in range(len(d))]
    total = sum(c["foreground"] for c in cases)
    kept = sum(int((c["label"] > 0).sum()) for c in cases)
    num_classes = max(2, *(c["top"] + 1 for c in cases), *(k + 1 for k in _json_labels(data_dir)))
    names = class_names(data_dir, num_classes)
    report = {
        "kind": "segmentation",
        "num_classes": num_classes,
        "class_names": names,
        "size": size,
        "foreground_kept": kept / total if total else 1.0,
        "samples": {s: len(d) for s, d in datasets.items()},
        "cases": {s: [i["case"] for i in p[:max_samples]] for s, p in zip(datasets, parts)},
    }
    columns = {"mean_dice": "mean Dice", **{f"dice_{c}": f"Dice {c}" + (f" ({n})" if n != c else "") for c, n in names.items()}}
    pair = from_engine(["pred", "label"])
    return Task(
        datasets=datasets,
        loss=DiceCELoss(to_onehot_y=True, softmax=True),
        metrics=lambda: {
            "mean_dice": MeanDice(include_background=False, output_transform=pair, save_details=False),
            "dice": MeanDice(include_background=False, reduction="mean_batch", output_transform=pair, save_details=False),
        },
        postprocessing=AsDiscreted(["pred", "label"], argmax=(True, False), to_onehot=num_classes),
        columns=columns,
        report=report,
        handlers=lambda: [PerClassMetrics("dice", list(names), prefix="dice_")],
    )


class SegmentationNet(nn.Module):
    """A 3D ResNet encoder (the transferred classification network) and a UNet-style decoder.

    The encoder's features are read by calling its submodules in order: ``relu(bn1(conv1(x)))`` (stride 2),
    then ``layer1(maxpool(.))``, ``layer2``, ``layer3``, ``layer4`` (strides 4 .. 32), the layout of both
    :class:`~monai_crossd.networks.nets.CrossDResNet` and a torchvision ResNet converted by
    :func:`~monai_crossd.converters.convert_to_3d`. Its ``avgpool`` and ``fc`` are replaced by ``nn.Identity``.
    The decoder (``self.decoder``, trained from scratch) upsamples trilinearly to each skip's shape, concatenates
    and applies a MONAI ``Convolution`` (3x3x3 conv, batch norm, ReLU); its last entry, a 1x1x1 conv head, gives
    ``num_classes`` logits at stride 2, upsampled trilinearly to the input size, so any input size works.

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
        missing = [n for n in ("conv1", "bn1", "relu", "maxpool", *_STAGES) if not isinstance(getattr(encoder, n, None), nn.Module)]
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
        ins, skips = [encoder_channels[-1], *decoder_channels[:-1]], list(encoder_channels[-2::-1])
        blocks = [
            Convolution(3, i + s, o, kernel_size=3, act="RELU", norm="BATCH", bias=False)
            for i, s, o in zip(ins, skips, decoder_channels)
        ]
        self.decoder = nn.ModuleList([*blocks, Convolution(3, decoder_channels[-1], num_classes, kernel_size=1, conv_only=True)])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder features of ``x`` ``(B, C_in, D, H, W)``, strides 2, 4, 8, 16, 32."""
        e = self.encoder
        out = [e.relu(e.bn1(e.conv1(x)))]
        x = e.maxpool(out[0])
        for name in _STAGES:
            x = getattr(e, name)(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, D, H, W)`` -> ``(B, num_classes, D, H, W)`` logits."""
        if x.ndim != 5:
            raise ValueError(f"`x` should be (B, C, D, H, W), got shape {tuple(x.shape)}.")
        features = self.features(x)
        y = features[-1]
        for block, skip in zip(self.decoder[:-1], features[-2::-1]):
            y = block(torch.cat([F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False), skip], 1))
        return F.interpolate(self.decoder[-1](y), size=x.shape[2:], mode="trilinear", align_corners=False)
