"""Datalists for 2D image folders in the RadImageNet layout ``<root>/<modality>/<region>/<class>/*.png|jpg``.

RadImageNet (Mei et al., Radiology: AI 2022) stores its 1.35 M 2D CT/MR/US slices as
``<modality>/<region>/<class>/<image>``; the Cross-D paper pre-trains its 2D prior on it. Here a class is
the string ``"<modality>/<region>/<class>"`` and labels are indices into the sorted list of the classes
found, so any folder tree with the same layout (one's own data included) becomes a classification
datalist for :class:`monai.data.Dataset` with ``LoadImaged``.

Example:
    >>> classes = image_folder_classes("/data/radimagenet")  # doctest: +SKIP
    >>> train = image_folder_datalist("/data/radimagenet", split="train", val_fraction=0.1)  # doctest: +SKIP
    >>> train[0]  # doctest: +SKIP
    {'image': '/data/radimagenet/CT/abdomen/normal/0001.png', 'label': 0, 'class_name': 'CT/abdomen/normal'}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from monai_crossd.apps.data.split import check_train_val, train_val_part

__all__ = ["IMAGE_EXTENSIONS", "image_folder_classes", "image_folder_datalist", "scan_image_folder"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_DEPTH = 4  # modality / region / class / file


def scan_image_folder(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, list[str]]:
    """Image files per class under ``root``: ``{"<modality>/<region>/<class>": [sorted paths]}``.

    Files at another depth than ``<root>/<modality>/<region>/<class>/<file>`` are skipped with a warning;
    hidden files and folders (starting with ``.``) are ignored; extensions match case-insensitively.

    Raises:
        ValueError: when ``root`` is not a folder or holds no image at the expected depth.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"Image folder `root` should be an existing directory, got {root!r}.")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    found: dict[str, list[str]] = {}
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        parts = [] if rel == "." else rel.split(os.sep)
        images = [f for f in filenames if not f.startswith(".") and f.lower().endswith(exts)]
        if not images:
            continue
        if len(parts) != _DEPTH - 1:
            skipped += len(images)
            continue
        found.setdefault("/".join(parts), []).extend(os.path.join(dirpath, f) for f in sorted(images))
    if skipped:
        logger.warning(
            "Skipped %d image files in %s that are not at <root>/<modality>/<region>/<class>/<file>.", skipped, root
        )
    if not found:
        raise ValueError(
            f"Image folder {root!r} holds no {exts} files at <root>/<modality>/<region>/<class>/<file> "
            "(the RadImageNet layout)."
        )
    return dict(sorted(found.items()))


def image_folder_classes(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Sorted unique ``"<modality>/<region>/<class>"`` names under ``root``; label ``i`` is ``classes[i]``."""
    return list(scan_image_folder(root, extensions))


def image_folder_datalist(
    root: str | os.PathLike,
    split: str = "all",
    val_fraction: float = 0.1,
    classes: Sequence[str] | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[dict]:
    """A classification datalist from a RadImageNet-layout folder.

    The split is stratified and deterministic: :func:`~monai_crossd.apps.data.split.split_datalist` by class
    (``val_fraction`` of each class in ``"val"``, none when it is 0), each split in sorted file order.

    Args:
        root: the folder.
        split: ``"train"``, ``"val"`` or ``"all"``. Defaults to ``"all"``.
        val_fraction: of each class held out as ``"val"``, in ``[0, 1)``. Defaults to 0.1.
        classes: the label space (e.g. from a training folder); None uses
            :func:`image_folder_classes` of ``root``. Classes under ``root`` not in it raise.
        max_per_class: keep at most the first this many files per class of the split. Defaults to None (all).
        seed: of the split. Defaults to 0.
        extensions: image file extensions. Defaults to ``(".png", ".jpg", ".jpeg")``.

    Returns:
        ``[{"image": path, "label": int, "class_name": str}, ...]``.
    """
    check_train_val(split, val_fraction)
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise ValueError(f"`max_per_class` should be a positive int or None, got {max_per_class!r}.")
    found = scan_image_folder(root, extensions)
    classes = list(found) if classes is None else list(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(
            f"Image folder {os.fspath(root)!r} holds classes not in `classes`: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} (expected a subset of {len(classes)} classes)."
        )
    index = {name: i for i, name in enumerate(classes)}
    items = [{"image": f, "label": index[name], "class_name": name} for name, files in found.items() for f in files]
    items = train_val_part(items, split, val_fraction, seed, label_key="label")
    if max_per_class is not None:
        by_class: dict[int, list[dict]] = {}
        for item in items:
            by_class.setdefault(item["label"], []).append(item)
        items = [item for group in by_class.values() for item in group[:max_per_class]]
    logger.info("Image folder %s[%s]: %d images in %d classes.", os.fspath(root), split, len(items), len(found))
    return items
