"""A MONAI ``ImageReader`` on SimpleITK: DICOM series through GDCM (JPEG2000, JPEG-LS, RLE), NRRD, MetaImage, NIfTI.

MONAI's own SimpleITK-free readers leave gaps: :class:`monai.data.NibabelReader` reads neither ``.nrrd`` nor ``.mha``,
:class:`monai.data.PydicomReader` decodes a compressed transfer syntax only when a decoder plugin happens to be
installed, and :class:`monai.data.ITKReader` needs ITK's Python wheels. :class:`SimpleITKReader` follows
``ITKReader``'s conventions on SimpleITK, so its output equals the other readers' (same array axis order and RAS
affine as ``NibabelReader`` on a NIfTI and ``PydicomReader`` on a DICOM series folder, with their defaults).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import, require_pkg

sitk, has_sitk = optional_import("SimpleITK")

__all__ = ["SIMPLEITK_ONLY_SUFFIXES", "SIMPLEITK_SUFFIXES", "SimpleITKReader"]

#: Suffixes of the formats that SimpleITK reads and nibabel and pydicom do not (NRRD, MetaImage).
SIMPLEITK_ONLY_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: File suffixes :meth:`SimpleITKReader.verify_suffix` accepts (a folder is read as a DICOM series).
SIMPLEITK_SUFFIXES = (".nii", ".nii.gz", ".dcm", *SIMPLEITK_ONLY_SUFFIXES)


@require_pkg(pkg_name="SimpleITK")
class SimpleITKReader(ImageReader):
    """Load medical images with SimpleITK; a folder is read as one DICOM series through GDCM.

    The array is returned in ITK's index order ``(X, Y[, Z])`` (``(X, Y[, Z], C)`` for multi-component pixels,
    ``original_channel_dim`` ``-1``), i.e. the order of :class:`monai.data.NibabelReader` on a NIfTI file and of
    :class:`monai.data.PydicomReader` on a DICOM series folder; the affine is ITK's ``direction @ diag(spacing)`` and
    ``origin``, converted from LPS to RAS. DICOM slices are sorted by GDCM along the slice normal (``PydicomReader``
    sorts by ``InstanceNumber``: the two agree when instance numbers increase with position). Rescale slope and
    intercept are applied by GDCM.

    Args:
        channel_dim: the channel dimension of the image, for ``original_channel_dim``; ``None`` gives ``"no_channel"``
            for a scalar image and ``-1`` otherwise. Defaults to ``None``.
        series_name: the ``SeriesInstanceUID`` to read from a folder holding several series; when empty, a folder
            must hold exactly one. Defaults to ``""``.
        reverse_indexing: return numpy's ``([Z,] Y, X)`` order instead of ITK's ``(X, Y[, Z])``; the metadata is
            unchanged. Defaults to ``False``.
        affine_lps_to_ras: convert the affine from ITK's LPS to RAS, as ``NibabelReader``. Defaults to ``True``.
        kwargs: passed to ``SimpleITK.ReadImage`` (``outputPixelType``, ``imageIO``).

    Example:
        >>> from monai.transforms import LoadImage
        >>> image = LoadImage(reader=SimpleITKReader(), image_only=True)("case.nrrd")  # doctest: +SKIP
        >>> image.shape, image.affine  # (X, Y, Z), RAS  # doctest: +SKIP
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_name: str = "",
        reverse_indexing: bool = False,
        affine_lps_to_ras: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.kwargs = kwargs
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_name = series_name
        self.reverse_indexing = reverse_indexing
        self.affine_lps_to_ras = affine_lps_to_ras
        self.filenames: list[str] = []

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every name is a folder (a DICOM series) or ends with one of :data:`SIMPLEITK_SUFFIXES`.

        Args:
            filename: a file name or a list of them.
        """
        return has_sitk and all(
            os.path.isdir(name) or str(name).lower().endswith(SIMPLEITK_SUFFIXES) for name in ensure_tuple(filename)
        )

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read one image per name (a list of names is stacked as channels by :meth:`get_data`).

        Args:
            data: a file, a DICOM series folder, or a list of them.
            kwargs: passed to ``SimpleITK.ReadImage``, over the constructor's ``kwargs``.

        Returns:
            a ``SimpleITK.Image``, or a list of them for a list of names.

        Raises:
            ValueError: a folder holds no DICOM series, several series (the folder and the UIDs are named) or not the
                series ``series_name``.
        """
        kwargs_ = {**self.kwargs, **kwargs}
        self.filenames = [os.fspath(name) for name in ensure_tuple(data)]
        images = [sitk.ReadImage(self._files(name), **kwargs_) for name in self.filenames]
        return images if len(images) > 1 else images[0]

    def _files(self, name: str) -> str | list[str]:
        """``name`` itself, or for a folder the files of its one DICOM series as GDCM sorts them."""
        if not Path(name).is_dir():
            return name
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(name))
        if not uids:
            raise ValueError(f"DICOM series folder {name!r} holds no DICOM series that GDCM can read.")
        if self.series_name:
            if self.series_name not in uids:
                raise ValueError(
                    f"DICOM series folder {name!r} has no series `series_name`={self.series_name!r}; it has {uids}."
                )
            uids = [self.series_name]
        if len(uids) > 1:
            raise ValueError(
                f"DICOM series folder {name!r} holds {len(uids)} series, expected one: {uids}. Move each series to its "
                "own folder or pass `series_name`."
            )
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(name, uids[0]))

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The array and metadata of the image(s); several images are stacked as channels (first image's metadata).

        Args:
            img: a ``SimpleITK.Image`` or a list of them, from :meth:`read`.

        Returns:
            ``(array, meta)``: ``array`` is ``(X, Y[, Z])``, ``(X, Y[, Z], C)`` for multi-component pixels, with a
            leading channel axis for several images; ``meta`` holds ``affine``, ``original_affine``, ``spacing``,
            ``spatial_shape``, ``original_channel_dim``, ``space`` and ``filename_or_obj``.
        """
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for index, image in enumerate(img if isinstance(img, (list, tuple)) else [img]):  # an Image is iterable
            array = self._get_array_data(image)
            header: dict = {"spacing": np.asarray(image.GetSpacing())}
            if index < len(self.filenames):
                header["filename_or_obj"] = self.filenames[index]
            header[MetaKeys.ORIGINAL_AFFINE] = self._get_affine(image)
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.SPATIAL_SHAPE] = self._get_spatial_shape(image)
            if self.channel_dim is None:
                no_channel = array.ndim == len(header[MetaKeys.SPATIAL_SHAPE])
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if no_channel else -1
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            arrays.append(array)
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta

    def _get_affine(self, image: Any) -> np.ndarray:
        """``(r + 1, r + 1)`` affine of the first ``r = min(dimension, 3)`` axes; RAS unless ``affine_lps_to_ras``."""
        dims = image.GetDimension()
        rank = min(max(dims, 1), 3)
        direction = np.asarray(image.GetDirection()).reshape(dims, dims)[:rank, :rank]
        affine = np.eye(rank + 1)
        affine[:rank, :rank] = direction @ np.diag(np.asarray(image.GetSpacing())[:rank])
        affine[:rank, -1] = np.asarray(image.GetOrigin())[:rank]
        return orientation_ras_lps(affine) if self.affine_lps_to_ras else affine

    def _get_spatial_shape(self, image: Any) -> np.ndarray:
        size = list(image.GetSize())
        if isinstance(self.channel_dim, int):
            size.pop(self.channel_dim)
        return np.asarray(size[: min(max(image.GetDimension(), 1), 3)])

    def _get_array_data(self, image: Any) -> np.ndarray:
        """``(X, Y[, Z][, C])`` (or ``([Z,] Y, X[, C])`` with ``reverse_indexing``), components last."""
        array = sitk.GetArrayFromImage(image)  # ([Z,] Y, X[, C])
        if self.reverse_indexing:
            return array
        return array.T if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(array.T, 0, -1)
