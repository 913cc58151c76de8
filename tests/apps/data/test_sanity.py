"""CheckInputd / CheckLabelsd on real files broken the ways clinical inputs are: a 2D NIfTI, a single DICOM slice, a
2-channel 4D NIfTI, an MR volume rescaled to Hounsfield units, a series tagged Modality=CT, a study whose series come
from different patients or have a shifted origin, a label map with value 7; all made from ``../shared/data``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_crossd.apps.data import (
    CheckedLoadImaged,
    CheckInputd,
    CheckLabelsd,
    SimpleITKReader,
    air_fraction,
    dicom_tags,
    overlap_fraction,
    read_input_format,
    world_bounds,
)

REPO = Path(__file__).resolve().parents[3]
MODALITIES = ["FLAIR", "T1w", "T1wCE", "T2w"]
STUDY3 = {"FLAIR": "36468-FLAIRreg-58706", "T1w": "26401-T1prereg-52906", "T1wCE": "11-T1post-18670", "T2w": "37830-T2reg-78532"}  # fmt: skip


def _mr_check(**kwargs):
    """The check the hippocampus bundle builds from its metadata.json (MR, 3 spatial dims, 1 channel)."""
    return CheckInputd("image", modality="MR", spatial_dims=3, num_channels=1, **kwargs)


def _load(path, key="image", reader="NibabelReader"):
    return CheckedLoadImaged(key, reader=reader, image_only=True)({key: str(path)})


@pytest.fixture(scope="module")
def broken(tmp_path_factory, shared_data):
    """Real hippocampus image/label and NIfTI files broken from them."""
    root = tmp_path_factory.mktemp("broken_nifti")
    image = shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    label = shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    source = nib.load(image)
    values = np.asarray(source.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(values[:, :, values.shape[2] // 2], source.affine), root / "slice_2d.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([values, values], axis=-1), source.affine), root / "two_channels.nii.gz")
    # MR rescaled to Hounsfield-like values: darkest voxel -> -1000 (air), 99.5th percentile -> 1000
    low, high = values.min(), np.percentile(values, 99.5)
    hounsfield = np.clip((values - low) / (high - low) * 2000 - 1000, -1024, 3071).astype(np.int16)
    nib.save(nib.Nifti1Image(hounsfield, source.affine), root / "ct_like.nii.gz")
    labels = np.asarray(nib.load(label).dataobj).astype(np.uint8)
    labels[labels == 2] = 7  # posterior hippocampus labelled 7
    nib.save(nib.Nifti1Image(labels, nib.load(label).affine), root / "label_7.nii.gz")
    return {
        "root": root, "image": image, "label": label, "ct_air": float((hounsfield <= -500).mean()),
        "ct_range": (int(hounsfield.min()), int(hounsfield.max())),
        "sevens": int((labels == 7).sum()), "labels_size": labels.size,
    }  # fmt: skip


# ---- the expectations come from the bundle's metadata.json ---------------------------------------------------------


def test_read_input_format_from_bundle_metadata(tmp_path):
    hippocampus = REPO / "bundles" / "crossd_hippocampus_segmentation" / "configs" / "metadata.json"
    brats = REPO / "bundles" / "crossd_brats" / "configs" / "metadata.json"
    assert read_input_format(hippocampus) == {"modality": "MR", "spatial_dims": 3, "num_channels": 1}
    assert read_input_format(brats) == {"modality": "MR", "spatial_dims": 3, "num_channels": 4}
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(str(hippocampus)))} network_data_format.inputs.img does not exist; inputs are \['image'\]\.$"):  # fmt: skip
        read_input_format(hippocampus, key="img")
    meta = json.loads(hippocampus.read_text())
    del meta["network_data_format"]["inputs"]["image"]["num_channels"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"network_data_format.inputs.image has no 'num_channels'\.$"):
        read_input_format(tmp_path / "metadata.json")
    with pytest.raises(ValueError, match=r"^`metadata_file` '.*nope.json' does not exist\.$"):
        read_input_format(tmp_path / "nope.json")


# ---- pure functions ----------------------------------------------------------------------------------------------


def test_air_fraction_counts_voxels_at_or_below_minus_500():
    assert air_fraction(np.array([-1024, -500, -499, 0, 1500], np.int16)) == pytest.approx(0.4)
    assert air_fraction(torch.tensor([0, 200, 255], dtype=torch.uint8)) == 0.0  # no wrap-around of -500 into uint8
    assert air_fraction(np.zeros((0,))) == 0.0


def test_world_bounds_and_overlap():
    # 2 mm voxels along x, axes permuted and flipped, origin (10, 20, 30)
    affine = np.array([[0, 0, 2.0, 10], [-1.0, 0, 0, 20], [0, 1.0, 0, 30], [0, 0, 0, 1]])
    low, high = world_bounds(affine, (4, 6, 5))
    np.testing.assert_allclose(low, [10 - 1, 20 - 3.5, 30 - 0.5])
    np.testing.assert_allclose(high, [10 + 9, 20 + 0.5, 30 + 5.5])
    unit = (np.zeros(3), np.ones(3))
    assert overlap_fraction(unit, (np.full(3, 0.5), np.full(3, 10.0))) == pytest.approx(0.125)
    assert overlap_fraction(unit, (np.full(3, -1.0), np.full(3, 2.0))) == 1.0  # contained in the larger one
    assert overlap_fraction(unit, (np.full(3, 1.0), np.full(3, 2.0))) == 0.0  # touching faces share no volume


# ---- real inputs pass ------------------------------------------------------------------------------------------


def test_no_shared_mr_volume_looks_like_ct(shared_data):
    """The docstring's measurement: no voxel <= -500 in any of the 208 MSD hippocampus MR volumes."""
    files = sorted((shared_data / "hippocampus" / "imagesTr").glob("*.nii.gz"))
    assert len(files) == 208
    assert max(air_fraction(np.asarray(nib.load(f).dataobj)) for f in files) == 0.0


def test_real_mr_image_and_labels_pass_unchanged(broken):
    data = CheckedLoadImaged(["image", "label"], reader="NibabelReader", image_only=True)(
        {"image": str(broken["image"]), "label": str(broken["label"])}
    )
    out = CheckLabelsd("label", num_classes=3)(_mr_check()(data))
    assert out["image"] is data["image"] and out["label"] is data["label"]


def test_real_study_passes(shared_data):
    study = shared_data / "dicom" / "brain_tumor_progression" / "Study3"
    data = CheckedLoadImaged(MODALITIES, reader="PydicomReader", image_only=True)(
        {m: str(study / STUDY3[m]) for m in MODALITIES}
    )
    check = CheckInputd(MODALITIES, modality="MR", spatial_dims=3, num_channels=4)
    assert set(check(data)) == set(MODALITIES)
    assert dicom_tags(data["FLAIR"].meta) == {"Modality": "MR", "PatientID": "PGBM-003"}


# ---- modality ----------------------------------------------------------------------------------------------------


def test_ct_like_nifti_is_refused_for_an_mr_model(broken):
    bad = broken["root"] / "ct_like.nii.gz"
    data = _load(bad)
    share = broken["ct_air"]
    assert share > 0.05  # 7.9 % for this case (docstring)
    message = (
        rf"^key 'image' file '{re.escape(str(bad))}' looks like CT in Hounsfield units, expected MR: "
        rf"{share * 100:.1f}% of its voxels are <= -500 \(CT-like from 1%; MR magnitude images have none\), "
        rf"intensity range \[{broken['ct_range'][0]}, {broken['ct_range'][1]}\]; pass allow_unexpected=True \(bundles: "
        r"--allow_unexpected_inputs True\) to go on with a warning\.$"
    )
    with pytest.raises(ValueError, match=message):
        _mr_check()(data)
    with pytest.warns(UserWarning, match=rf"file '{re.escape(str(bad))}' looks like CT .*; going on \(allow_unexpected=True\)\.$"):  # fmt: skip
        out = _mr_check(allow_unexpected=True)(data)
    assert out["image"] is data["image"]
    assert CheckInputd("image", modality="CT")(data)["image"] is data["image"]  # a CT model takes it


@pytest.fixture
def ct_series(shared_data, tmp_path):
    """A real MR series re-tagged Modality=CT with pydicom."""
    import pydicom

    series = tmp_path / "ct_series"
    shutil.copytree(shared_data / "dicom" / "brain_tumor_progression" / "Study1" / "13_HCropVolume", series)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality = "CT"
        ds.save_as(path)
    return series


def test_dicom_modality_tag_is_checked(ct_series):
    data = _load(ct_series, reader="PydicomReader")
    message = rf"^key 'image' file '{re.escape(str(ct_series))}' is DICOM Modality 'CT', expected 'MR'; pass allow_unexpected=True"  # fmt: skip
    with pytest.raises(ValueError, match=message):
        _mr_check()(data)
    with pytest.warns(UserWarning, match=r"is DICOM Modality 'CT', expected 'MR'; going on"):
        _mr_check(allow_unexpected=True)(data)
    # the same tag when a reader kept it in the metadata (PydicomReader with prune_metadata=False), and through ITK
    full = CheckedLoadImaged("image", reader="PydicomReader", image_only=True, prune_metadata=False)({"image": str(ct_series)})  # fmt: skip
    assert full["image"].meta["00080060"]["Value"] == ["CT"]
    assert dicom_tags({"00080060": {"vr": "CS", "Value": ["CT"]}}) == {"Modality": "CT", "PatientID": None}
    assert dicom_tags({"0008|0060": "CT ", "0010|0020": "P1"}) == {"Modality": "CT", "PatientID": "P1"}
    sitk = _load(ct_series, reader=SimpleITKReader())
    with pytest.raises(ValueError, match=message):
        _mr_check()(sitk)


# ---- dimensions and channels ---------------------------------------------------------------------------------------


def test_2d_nifti_is_refused_naming_the_file(broken):
    bad = broken["root"] / "slice_2d.nii.gz"
    message = (
        rf"^key 'image' file '{re.escape(str(bad))}' has 2 spatial dimensions \(spatial shape \(35, 51\), array shape "
        r"\(35, 51\)\), expected 3: a 2D image or a single slice\?$"
    )
    with pytest.raises(ValueError, match=message):
        _mr_check(allow_unexpected=True)(_load(bad))  # not overridable: the network cannot take it


def test_single_dicom_slice_is_refused(shared_data, tmp_path):
    series = shared_data / "dicom" / "brain_tumor_progression" / "Study1" / "13_HCropVolume"
    one = tmp_path / "one_slice"
    one.mkdir()
    shutil.copy(series / "5.dcm", one / "5.dcm")
    with pytest.raises(ValueError, match=rf"^key 'image' file '{re.escape(str(one))}' has 2 spatial dimensions .*expected 3: a 2D image or a single slice\?$"):  # fmt: skip
        _mr_check()(_load(one, reader="PydicomReader"))
    # SimpleITK reads the same slice as a (35, 51, 1) volume
    with pytest.raises(ValueError, match=rf"^key 'image' file '{re.escape(str(one))}' has spatial shape \(35, 51, 1\): a single slice, expected a 3D volume\.$"):  # fmt: skip
        _mr_check()(_load(one, reader=SimpleITKReader()))


def test_two_channel_4d_nifti_names_the_file_not_the_network(broken):
    bad = broken["root"] / "two_channels.nii.gz"
    with pytest.raises(ValueError, match=rf"^key 'image' file '{re.escape(str(bad))}' has 2 channels \(array shape \(35, 51, 35, 2\), spatial shape \(35, 51, 35\)\), expected 1\.$"):  # fmt: skip
        _mr_check()(_load(bad))


def test_channels_are_shared_by_the_modality_keys(shared_data):
    """After EnsureChannelFirst (MONAI Label's study loader) a modality is (1, X, Y, Z) and still counts 1 channel."""
    from monai.transforms import EnsureChannelFirstd

    series = str(shared_data / "dicom" / "brain_tumor_progression" / "Study1" / "13_HCropVolume")
    data = EnsureChannelFirstd(["a", "b"])(CheckedLoadImaged(["a", "b"], reader="PydicomReader", image_only=True)({"a": series, "b": series}))  # fmt: skip
    assert CheckInputd(["a", "b"], modality="MR", spatial_dims=3, num_channels=2)(data)["a"].shape[0] == 1
    with pytest.raises(ValueError, match=r"^key 'a' file '.*13_HCropVolume' has 1 channels .*, expected 2 \(4 over 2 keys\)\.$"):  # fmt: skip
        CheckInputd(["a", "b"], num_channels=4)(data)


# ---- multi-modality studies ------------------------------------------------------------------------------------


@pytest.fixture
def shifted_study(shared_data, tmp_path):
    """Study3's four series, the T2w one moved 400 mm along z (ImagePositionPatient)."""
    import pydicom

    study = tmp_path / "study"
    for name in STUDY3.values():
        shutil.copytree(shared_data / "dicom" / "brain_tumor_progression" / "Study3" / name, study / name)
    for path in (study / STUDY3["T2w"]).iterdir():
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 400.0]
        ds.save_as(path)
    return study


def test_series_that_do_not_overlap_are_refused_naming_both(shifted_study):
    files = {m: str(shifted_study / STUDY3[m]) for m in MODALITIES}
    data = CheckedLoadImaged(MODALITIES, reader="PydicomReader", image_only=True)(files)
    check = CheckInputd(MODALITIES, modality="MR", spatial_dims=3, num_channels=4)
    message = (
        rf"^key 'FLAIR' file '{re.escape(files['FLAIR'])}' and key 'T2w' file '{re.escape(files['T2w'])}' do not "
        r"overlap in space: their world bounding boxes \(RAS, mm\) \[.*\] to \[.*\] and \[.*\] to \[.*\] share 0% of "
        r"the smaller one, expected at least 50% \(series of one study overlap\); pass allow_unexpected=True"
    )
    with pytest.raises(ValueError, match=message):
        check(data)
    with pytest.warns(UserWarning, match=r"key 'T2w' file .* do not overlap in space"):
        CheckInputd(MODALITIES, modality="MR", spatial_dims=3, num_channels=4, allow_unexpected=True)(data)


def test_series_of_different_patients_are_refused(shared_data):
    """Hippocampus crops of three patients overlap in space (94-95 %): their DICOM PatientID tells them apart."""
    root = shared_data / "dicom" / "brain_tumor_progression"
    files = {
        "FLAIR": str(root / "Study3" / "11_HCropVolume"), "T1w": str(root / "Study1" / "13_HCropVolume"),
        "T1wCE": str(root / "Study3" / "11_HCropVolume"), "T2w": str(root / "Study3" / "11_HCropVolume"),
    }  # fmt: skip
    data = CheckedLoadImaged(MODALITIES, reader="PydicomReader", image_only=True)(files)
    message = (
        rf"^key 'FLAIR' file '{re.escape(files['FLAIR'])}' and key 'T1w' file '{re.escape(files['T1w'])}' are of "
        r"different patients \(DICOM PatientID 'PGBM-003' and 'PGBM-002'\), expected the series of one study; pass"
    )
    with pytest.raises(ValueError, match=message):
        CheckInputd(MODALITIES, modality="MR", spatial_dims=3, num_channels=4)(data)


# ---- labels ------------------------------------------------------------------------------------------------------


def test_label_value_7_names_the_file_and_the_value(broken):
    bad = broken["root"] / "label_7.nii.gz"
    data = _load(bad, key="label")
    message = (
        rf"^key 'label' file '{re.escape(str(bad))}' has values \[7\] that are not class indices in \[0, 2\] "
        rf"\(num_classes=3\), in {broken['sevens']} of {broken['labels_size']} voxels\.$"
    )
    with pytest.raises(ValueError, match=message):
        CheckLabelsd("label", num_classes=3)(data)
    assert CheckLabelsd("label", num_classes=8)(data)["label"] is data["label"]
    with pytest.raises(ValueError, match=r"has values \[0\.5\] that are not class indices"):
        CheckLabelsd("label", num_classes=3)({"label": torch.tensor([0.0, 0.5, 2.0])})


# ---- arguments ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"keys": ["a", "b"], "num_channels": 3}, r"^`num_channels`=3 should be a positive multiple of the number of keys \(2: \['a', 'b'\]\)"),
        ({"keys": "a", "modality": " "}, r"^`modality` should be a DICOM modality code such as 'MR' or None, got ' '\.$"),
        ({"keys": "a", "spatial_dims": 4}, r"^`spatial_dims` should be 1, 2, 3 or None, got 4\.$"),
        ({"keys": "a", "min_overlap": 1.5}, r"^`min_overlap` should be in \[0, 1\] or None, got 1\.5\.$"),
        ({"keys": "a", "ct_air_fraction": 0}, r"^`ct_air_fraction` should be in \(0, 1\], got 0\.$"),
    ],
)  # fmt: skip
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CheckInputd(**kwargs)


def test_label_argument_error():
    with pytest.raises(ValueError, match=r"^`num_classes` should be a positive int, got 0\.$"):
        CheckLabelsd("label", num_classes=0)
