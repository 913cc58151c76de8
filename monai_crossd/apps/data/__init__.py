"""Readers, datalists and transforms for the data monai_crossd bundles use (NIfTI, DICOM, npz, image folders)."""

from __future__ import annotations

from .brats import (
    BRATS_LAYOUTS,
    BRATS_MODALITIES,
    NIFTI_SUFFIXES,
    brats_datalist,
    detect_brats_layout,
    study_datalist,
)
from .checks import CheckedLoadImaged, CheckFinited, check_datalist
from .demo import DEMO_MARKER, ensure_brats_demo, synthetic_brats_case
from .dicom import DEFAULT_SERIES_PATTERNS, check_dicom_series, match_series, write_dicom_series
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
from .nifti_pairs import NIFTI_EXTENSIONS, paired_nifti_datalist
from .sanity import (
    CheckInputd,
    CheckLabelsd,
    air_fraction,
    dicom_tags,
    overlap_fraction,
    read_input_format,
    world_bounds,
)
from .sitk_reader import SIMPLEITK_SUFFIXES, SimpleITKReader
from .sparse import LabelledSliced, labelled_slice_index, sparse_annotation
from .split import split_datalist

__all__ = [
    "CheckedLoadImaged",
    "SIMPLEITK_SUFFIXES",
    "SimpleITKReader",
    "CheckFinited",
    "CheckInputd",
    "CheckLabelsd",
    "air_fraction",
    "check_datalist",
    "dicom_tags",
    "overlap_fraction",
    "read_input_format",
    "world_bounds",
    "check_dicom_series",
    "NIFTI_EXTENSIONS",
    "paired_nifti_datalist",
    "BRATS_LAYOUTS",
    "BRATS_MODALITIES",
    "NIFTI_SUFFIXES",
    "brats_datalist",
    "detect_brats_layout",
    "split_datalist",
    "LabelledSliced",
    "labelled_slice_index",
    "sparse_annotation",
    "study_datalist",
    "DEMO_MARKER",
    "ensure_brats_demo",
    "synthetic_brats_case",
    "DEFAULT_SERIES_PATTERNS",
    "match_series",
    "write_dicom_series",
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
