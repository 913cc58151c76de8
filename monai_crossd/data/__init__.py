"""Readers, datalists and transforms for the data monai_crossd bundles use (NIfTI, DICOM, npz, image folders)."""

from __future__ import annotations

from .image_folder import IMAGE_EXTENSIONS, image_folder_classes, image_folder_datalist, scan_image_folder
from .medmnist import (
    MEDMNIST_SPLITS,
    existing_files,
    load_medmnist,
    medmnist_class_names,
    medmnist_datalist,
    medmnist_num_classes,
    write_medmnist_subset,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MEDMNIST_SPLITS",
    "existing_files",
    "image_folder_classes",
    "image_folder_datalist",
    "load_medmnist",
    "medmnist_class_names",
    "medmnist_datalist",
    "medmnist_num_classes",
    "scan_image_folder",
    "write_medmnist_subset",
]
