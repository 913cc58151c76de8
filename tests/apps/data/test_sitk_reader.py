"""SimpleITKReader against MONAI's readers on real data, and CheckedLoadImaged's fallback to it and its errors.

The references are MONAI's own readers (``NibabelReader`` on the MSD hippocampus NIfTI files, ``PydicomReader`` on the
TCIA brain tumour DICOM series), read through ``LoadImage`` with their defaults.
"""

from __future__ import annotations

import gzip
import locale
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import EnsureChannelFirst, LoadImage

from monai_crossd.apps.data import CheckedLoadImaged, SimpleITKReader, match_series

sitk = pytest.importorskip("SimpleITK")

HIPPO_IMAGES = ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz")  # uint8 and float32 as redistributed
SERIES = ("Study1/13_HCropVolume", "Study3/11-T1post-18670")  # axial 1 mm crop; oblique 0.69 x 0.69 x 6.5 mm


def _assert_same(image, reference):
    """Same shape, voxels (as float32) and RAS affine."""
    assert image.shape == reference.shape
    np.testing.assert_array_equal(image.numpy(), reference.numpy())
    np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy(), rtol=0, atol=1e-5)


def _nifti(shared_data: Path, name: str = HIPPO_IMAGES[0]) -> Path:
    return shared_data / "hippocampus" / "imagesTr" / name


def _series(shared_data: Path, name: str = SERIES[0]) -> Path:
    return shared_data / "dicom" / "brain_tumor_progression" / name


def _jpeg2000_copy(src: Path, dst: Path) -> Path:
    """``src`` rewritten slice by slice by GDCM in JPEG 2000 (lossless), tags and UIDs kept.

    GDCM's writer sets the process locale to "C" (measured: later ``subprocess.run(text=True)`` calls then decode as
    ASCII); the locale is restored afterwards."""
    dst.mkdir(parents=True)
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_jpeg2000(src, dst)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return dst


def _write_jpeg2000(src: Path, dst: Path) -> None:
    for path in sorted(src.iterdir()):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.LoadPrivateTagsOn()
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")
        writer.SetCompressor("JPEG2000")
        writer.UseCompressionOn()
        writer.SetFileName(str(dst / path.name))
        writer.Execute(reader.Execute())


@pytest.fixture
def no_jpeg2000_decoder(monkeypatch):
    """pydicom as installed without Pillow (or pylibjpeg, gdcm): its JPEG 2000 decoder has no plugin."""
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    monkeypatch.setattr(JPEG2000LosslessDecoder, "_available", {})
    monkeypatch.setattr(JPEG2000LosslessDecoder, "_unavailable", {"pillow": ("pillow>=10.0",)})


# ---- SimpleITKReader equals MONAI's readers ------------------------------------------------------------------------


@pytest.mark.parametrize("name", HIPPO_IMAGES)
def test_nifti_same_as_nibabel(shared_data, name):
    path = _nifti(shared_data, name)
    image, meta = LoadImage(reader=SimpleITKReader(), image_only=False)(path)
    reference, ref_meta = LoadImage(reader="NibabelReader", image_only=False)(path)
    _assert_same(image, reference)
    assert tuple(meta["spatial_shape"]) == tuple(ref_meta["spatial_shape"]) == nib.load(path).shape
    assert np.isnan(meta["original_channel_dim"]) and np.isnan(ref_meta["original_channel_dim"])
    assert meta["filename_or_obj"] == str(path)


def test_oblique_nifti_same_as_nibabel(shared_data, tmp_path):
    """Real voxels under a rotated, anisotropic, left-right flipped affine: the orientation conventions agree."""
    source = nib.load(_nifti(shared_data, HIPPO_IMAGES[1]))
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-0.8 * c, -1.2 * s, 0, 10.0], [-0.8 * s, 1.2 * c, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), affine), path)
    image = LoadImage(reader=SimpleITKReader(), image_only=True)(path)
    _assert_same(image, LoadImage(reader="NibabelReader", image_only=True)(path))
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-5)


@pytest.mark.parametrize("name", SERIES)
def test_dicom_series_same_as_pydicom(shared_data, name):
    folder = _series(shared_data, name)
    image, meta = LoadImage(reader=SimpleITKReader(), image_only=False)(folder)
    reference = LoadImage(reader="PydicomReader", image_only=True)(folder)
    _assert_same(image, reference)
    assert tuple(meta["spatial_shape"]) == tuple(reference.shape) and np.isnan(meta["original_channel_dim"])


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_nrrd_and_metaimage_read_back_as_the_nifti(shared_data, tmp_path, suffix):
    source = _nifti(shared_data, HIPPO_IMAGES[1])
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(source)), str(path))
    reference = LoadImage(reader="NibabelReader", image_only=True)(source)
    _assert_same(LoadImage(reader=SimpleITKReader(), image_only=True)(path), reference)
    # the bundles' loader, configured with nibabel, reads it through SimpleITK
    loaded = CheckedLoadImaged("image", reader="NibabelReader", image_only=True)({"image": str(path)})
    _assert_same(loaded["image"], reference)


def test_vector_pixels_give_a_last_channel_axis(shared_data, tmp_path):
    first = sitk.ReadImage(str(_nifti(shared_data, HIPPO_IMAGES[1])))
    images = [first, sitk.Cast(first * 2, first.GetPixelID())]
    path = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.Compose(images), str(path))
    image, meta = LoadImage(reader=SimpleITKReader(), image_only=False)(path)
    reference = LoadImage(reader="NibabelReader", image_only=True)(_nifti(shared_data, HIPPO_IMAGES[1]))
    assert image.shape == (*reference.shape, 2) and meta["original_channel_dim"] == -1
    assert tuple(meta["spatial_shape"]) == tuple(reference.shape)
    channels = EnsureChannelFirst()(image)
    assert channels.shape == (2, *reference.shape)
    np.testing.assert_array_equal(channels[0].numpy(), reference.numpy())
    np.testing.assert_array_equal(channels[1].numpy(), 2 * reference.numpy())


def test_reverse_indexing_and_lps(shared_data):
    path = _nifti(shared_data, HIPPO_IMAGES[1])
    reference = LoadImage(reader="NibabelReader", image_only=True)(path)
    image = LoadImage(reader=SimpleITKReader(reverse_indexing=True, affine_lps_to_ras=False), image_only=True)(path)
    np.testing.assert_array_equal(image.numpy(), reference.numpy().T)
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
    np.testing.assert_allclose(image.affine.numpy(), (flip @ reference.affine.to(torch.float64)).numpy(), atol=1e-5)


def test_verify_suffix(shared_data):
    reader = SimpleITKReader()
    assert reader.verify_suffix("a.NRRD") and reader.verify_suffix(["a.nii.gz", "b.mha"])
    assert reader.verify_suffix(_series(shared_data))
    assert not reader.verify_suffix("a.png") and not reader.verify_suffix(["a.nii.gz", "b.npz"])


def test_series_folder_errors(shared_data, tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(_series(shared_data), folder)
    uid = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))[0]
    for path in sorted(_series(shared_data, "Study2/14_HCropVolume").iterdir())[:3]:
        shutil.copy(path, folder / f"other_{path.name}")
    other = next(u for u in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) if u != uid)
    uids = rf"\[('{uid}', '{other}'|'{other}', '{uid}')\]"
    message = rf"^DICOM series folder '{re.escape(str(folder))}' holds 2 series, expected one: {uids}\. .*`series_name`"
    with pytest.raises(ValueError, match=message):
        SimpleITKReader().read(folder)
    image = LoadImage(reader=SimpleITKReader(series_name=uid), image_only=True)(folder)
    _assert_same(image, LoadImage(reader="PydicomReader", image_only=True)(_series(shared_data)))
    with pytest.raises(ValueError, match=r"has no series `series_name`='1\.2\.3'; it has \["):
        SimpleITKReader(series_name="1.2.3").read(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"^DICOM series folder '{re.escape(str(empty))}' holds no DICOM series"):
        SimpleITKReader().read(empty)


# ---- CheckedLoadImaged: the fallback and its errors ---------------------------------------------------------------


def test_jpeg2000_series_read_through_the_fallback(shared_data, tmp_path, no_jpeg2000_decoder, caplog):
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    source = _series(shared_data)
    folder = _jpeg2000_copy(source, tmp_path / "T1wCE")
    assert pydicom.dcmread(next(folder.iterdir())).file_meta.TransferSyntaxUID == JPEG2000Lossless
    reference = LoadImage(reader="PydicomReader", image_only=True)(source)
    with caplog.at_level(logging.INFO, logger="monai_crossd.apps.data.checks"):
        out = CheckedLoadImaged("T1wCE", reader="PydicomReader", image_only=True)({"T1wCE": str(folder)})
    _assert_same(out["T1wCE"], reference)
    logged = (
        rf"read {re.escape(str(folder))} with SimpleITKReader: PydicomReader could not \(RuntimeError: "
        r"Unable to decompress 'JPEG 2000 Image Compression \(Lossless Only\)' pixel data"
    )
    assert re.search(logged, caplog.text), caplog.text

    # without the fallback the error names the key, the folder and the missing decoder
    load = CheckedLoadImaged("T1wCE", reader="PydicomReader", image_only=True, fallback=False)
    message = (
        rf"^could not read key 'T1wCE' file '{re.escape(str(folder))}' \(missing decoder\): RuntimeError: Unable to "
        r"decompress .* because all plugins are missing dependencies: pillow - requires pillow>=10\.0 "
        r"\(PydicomReader\)$"
    )
    with pytest.raises(ValueError, match=message):
        load({"T1wCE": str(folder)})


def test_garbage_file_is_an_unsupported_format(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError) as info:
        CheckedLoadImaged("image", reader="NibabelReader", image_only=True)({"image": str(path)})
    message = str(info.value)
    assert message.startswith(f"could not read key 'image' file '{path}' (unsupported format): RuntimeError: ")
    assert message.endswith(f'RuntimeError: Unable to determine ImageIO reader for "{path}" (SimpleITKReader)')
    assert "(NibabelReader); " in message and "\n" not in message


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_not_read_by_simpleitk(shared_data, tmp_path, suffix):
    """ITK's NIfTI reader would zero-fill the missing half: the error stands, with nibabel's reason only."""
    data = _nifti(shared_data).read_bytes()
    data = data if suffix == ".nii.gz" else gzip.decompress(data)
    path = tmp_path / f"image{suffix}"
    path.write_bytes(data[: len(data) // 2])
    load = CheckedLoadImaged("image", reader="NibabelReader", image_only=True)
    cause = r"EOFError: Compressed file ended" if suffix == ".nii.gz" else r"OSError: Expected \d+ bytes, got \d+ bytes"
    with pytest.raises(ValueError, match=rf"^could not read key 'image' file '{re.escape(str(path))}' \(truncated or "
                                         rf"corrupt\?\): {cause}[^;]* \(NibabelReader\)$"):  # fmt: skip
        load({"image": str(path)})


def test_truncated_nrrd_names_simpleitk(shared_data, tmp_path):
    path = tmp_path / "image.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(_nifti(shared_data))), str(path))
    path.write_bytes(path.read_bytes()[:-3000])
    message = (
        rf"^could not read key 'image' file '{re.escape(str(path))}' \(truncated or corrupt\?\): RuntimeError: .*"
        r"fread got only \d+ .* \(SimpleITKReader\)$"
    )
    with pytest.raises(ValueError, match=message):
        CheckedLoadImaged("image", reader="NibabelReader", image_only=True)({"image": str(path)})


def test_match_series_names_unmatched_volume_files(tmp_path):
    for name in ("flair.nrrd", "t1.mha", "T2w.mhd", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    message = (
        rf"^study '{re.escape(str(tmp_path))}': no series found for modality 'FLAIR' \(patterns \('flair',\)\); "
        r"available series: \[\]\. The folder also holds image files that are not matched \(a series is a sub-folder "
        r"of DICOM files or a \.nii/\.nii\.gz file\): \['T2w\.mhd', 'flair\.nrrd', 't1\.mha'\]\.$"
    )
    with pytest.raises(ValueError, match=message):
        match_series(tmp_path, modalities=("FLAIR",))
