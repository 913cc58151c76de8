"""Bad inputs fail early with the file, key or argument named, and leave nothing half-written.

Damaged NIfTI files (truncated, garbage) and NaN voxels through the hippocampus bundle's own preprocessing and
training workflow; DICOM folders with two series, a missing slice or irregular spacing through the loader the
crossd_brats bundle uses; wrong network inputs; checkpoints of another architecture, class count or key prefix
through ``load_pretrained_2d`` and the bundles' checkpoint loaders; empty and mislabelled datalists.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_crossd.apps.bundle import CheckedCheckpointLoader, ResumeCheckpointLoader
from monai_crossd.apps.data import CheckedLoadImaged, CheckFinited, check_datalist, check_dicom_series
from monai_crossd.converters import load_pretrained_2d
from monai_crossd.networks.nets import CrossDResNet, CrossDUNet, crossd_resnet18

REPO = Path(__file__).resolve().parents[1]
HIPPO = REPO / "bundles" / "crossd_hippocampus_segmentation"
VESSEL = REPO / "bundles" / "crossd_vessel_classification"


def _chain(err: BaseException):
    """The exception and its causes (MONAI wraps transform and config errors in RuntimeError)."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def _raised(excinfo, kind, pattern):
    """The first exception of ``kind`` in the chain of ``excinfo``, asserting its text matches ``pattern``."""
    for err in _chain(excinfo.value):
        if isinstance(err, kind) and re.search(pattern, str(err)):
            return err
    raise AssertionError(f"no {kind.__name__} matching {pattern!r} in {[repr(e)[:300] for e in _chain(excinfo.value)]}")


@pytest.fixture(scope="module")
def nifti(tmp_path_factory, shared_data):
    """A real hippocampus image/label pair and damaged copies of the image."""
    root = tmp_path_factory.mktemp("nifti")
    image = shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    label = shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    data = image.read_bytes()
    (root / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    raw = gzip.decompress(data)
    (root / "truncated.nii").write_bytes(raw[: len(raw) // 2])
    (root / "garbage.nii.gz").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    source = nib.load(image)
    values = np.asarray(source.dataobj).astype(np.float32)
    values.flat[[10, 500, 2000]] = [np.nan, np.inf, -np.inf]
    nib.save(nib.Nifti1Image(values, source.affine), root / "nonfinite.nii.gz")
    return {"root": root, "image": image, "label": label}


# ---- NIfTI -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, cause",
    [
        ("truncated.nii.gz", r"EOFError: Compressed file ended before the end-of-stream marker was reached"),
        ("truncated.nii", r"OSError: Expected \d+ bytes, got \d+ bytes"),
        ("garbage.nii.gz", r"RuntimeError: LoadImage cannot find a suitable reader"),
    ],
)
def test_damaged_nifti_names_key_and_file(nifti, name, cause):
    bad = nifti["root"] / name
    load = CheckedLoadImaged(["image", "label"], reader="NibabelReader", image_only=True)
    message = rf"could not read key 'label' file '{re.escape(str(bad))}' \(truncated or corrupt\?\): {cause}"
    with pytest.raises(ValueError, match=message):
        load({"image": str(nifti["image"]), "label": str(bad)})
    with pytest.raises(ValueError, match=rf"key 'image': file '{re.escape(str(bad))}x' does not exist\."):
        load({"image": str(bad) + "x", "label": str(nifti["label"])})


def _parsed(config, *ids, **override):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(c) for c in ([config] if not isinstance(config, list) else config)])
    parser.update(override)
    return [parser.get_parsed_content(i) for i in ids]


def test_hippocampus_preprocessing_rejects_damaged_and_nonfinite_nifti(nifti, tmp_path):
    (inference,) = _parsed(HIPPO / "configs" / "inference.json", "preprocessing", input_dir=str(tmp_path),
                           ckpt_dir=str(tmp_path), output_dir=str(tmp_path))
    bad = nifti["root"] / "truncated.nii.gz"
    with pytest.raises(RuntimeError) as info:
        inference({"image": str(bad)})
    _raised(info, ValueError, rf"^could not read key 'image' file '{re.escape(str(bad))}' \(truncated or corrupt\?\): EOFError")

    (train,) = _parsed(HIPPO / "configs" / "train.json", "validate#preprocessing", ckpt_dir=str(tmp_path))
    bad = nifti["root"] / "nonfinite.nii.gz"
    with pytest.raises(RuntimeError) as info:
        train({"image": str(bad), "label": str(nifti["label"])})
    _raised(info, ValueError, rf"^key 'image' \(file '{re.escape(str(bad))}'\) has 3 non-finite voxels \(NaN or Inf\) out of \d+\.$")
    out = train({"image": str(nifti["image"]), "label": str(nifti["label"])})  # the real pair passes
    assert out["image"].shape[0] == 1 and torch.isfinite(out["image"]).all()


def test_hippocampus_training_stops_before_writing_anything(nifti, tmp_path):
    from monai.bundle import ConfigWorkflow

    bad = nifti["root"] / "garbage.nii.gz"
    item = {"image": str(bad), "label": str(nifti["label"])}
    dirs = {k: str(tmp_path / k) for k in ("ckpt_dir", "output_dir", "log_dir")}
    workflow = ConfigWorkflow(
        config_file=str(HIPPO / "configs" / "train.json"), workflow_type="train", max_epochs=1, channels=[4, 8, 16, 32],
        train_datalist=[item], val_datalist=[item], **dirs,
    )  # fmt: skip
    with pytest.raises(RuntimeError) as info:
        workflow.initialize()
        workflow.run()
    _raised(info, ValueError, rf"could not read key 'image' file '{re.escape(str(bad))}' \(truncated or corrupt\?\)")
    written = [p for d in dirs.values() for p in Path(d).rglob("*") if p.is_file()] if tmp_path.exists() else []
    assert not [p for p in written if p.suffix in (".pt", ".tmp") or ".tmp" in p.name], written


def test_check_finite_counts_and_passes_integers():
    with pytest.raises(ValueError, match=r"^key 'x' \(file '<unknown file>'\) has 2 non-finite voxels \(NaN or Inf\) out of 4\.$"):
        CheckFinited("x")({"x": torch.tensor([1.0, float("nan"), float("inf"), 0.0])})
    assert CheckFinited("x")({"x": np.arange(4)})["x"].tolist() == [0, 1, 2, 3]


# ---- DICOM ---------------------------------------------------------------------------------------------------


@pytest.fixture
def series(shared_data, tmp_path):
    src = shared_data / "dicom" / "brain_tumor_progression" / "Study1" / "13_HCropVolume"
    dst = tmp_path / "series"
    shutil.copytree(src, dst)
    return dst


def _by_position(folder: Path) -> list[Path]:
    import pydicom

    return sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def test_dicom_series_check_passes_real_series(series):
    info = check_dicom_series(series)
    assert info["num_slices"] == 32 and info["slice_spacing"] == pytest.approx(1.0)


def test_dicom_folder_with_two_series(series, shared_data):
    other = shared_data / "dicom" / "brain_tumor_progression" / "Study2" / "14_HCropVolume"
    for f in sorted(other.iterdir())[:3]:
        shutil.copy(f, series / f"other_{f.name}")
    with pytest.raises(ValueError, match=rf"^DICOM series folder '{re.escape(str(series))}' holds 2 series, expected one: .*\(32 files, .*\(3 files, e\.g\. 'other_.*Move each series to its own folder\.$"):
        check_dicom_series(series)


def test_dicom_missing_slice(series):
    ordered = _by_position(series)
    ordered[10].unlink()
    message = (
        rf"^DICOM series folder '{re.escape(str(series))}': 1 slice\(s\) missing between '{ordered[9].name}' "
        r"\(InstanceNumber \d+, [-\d.]+ mm\) and '" + ordered[11].name + r"' \(InstanceNumber \d+, [-\d.]+ mm\): a gap of 2 mm "
        r"where the slice spacing is 1 mm\.$"
    )
    with pytest.raises(ValueError, match=message):
        check_dicom_series(series)
    # the crossd_brats loading path (PydicomReader on a series folder) runs the check before reading
    with pytest.raises(ValueError, match=message):
        CheckedLoadImaged("FLAIR", reader="PydicomReader", image_only=True)({"FLAIR": str(series)})


def test_dicom_inconsistent_spacing(series):
    import pydicom

    for path in _by_position(series)[16:]:
        ds = pydicom.dcmread(path)
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 0.4]
        ds.save_as(path)
    with pytest.raises(ValueError, match=rf"^DICOM series folder '{re.escape(str(series))}': inconsistent slice spacing, 1 to 1\.4 mm \(median 1 mm, rtol 0\.05\); first irregular step between '.+' and '.+'\.$"):
        check_dicom_series(series)


def test_dicom_folder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^DICOM series folder '.*nope' is not a directory\.$"):
        check_dicom_series(tmp_path / "nope")
    with pytest.raises(ValueError, match=rf"^DICOM series folder '{re.escape(str(tmp_path))}' holds no file\.$"):
        check_dicom_series(tmp_path)
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(ValueError, match=r"'notes.txt' is not a readable DICOM file"):
        check_dicom_series(tmp_path)


# ---- networks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "net, x, message",
    [
        (CrossDResNet(3, 4, 2, "basic", (1, 1), block_inplanes=(4, 8)), torch.zeros(1, 1, 8, 8, 8),
         r"^CrossDResNet: `x` should have in_channels=4 channels \(dim 1 of \(B, C, D, H, W\)\), got shape \(1, 1, 8, 8, 8\)\.$"),
        (CrossDResNet(3, 4, 2, "basic", (1, 1), block_inplanes=(4, 8)), torch.zeros(1, 4, 8, 8),
         r"^CrossDResNet: `x` should be 5D \(B, C, D, H, W\) for spatial_dims=3, got shape \(1, 4, 8, 8\)\.$"),
        (CrossDUNet(2, 1, 3, channels=(4, 8), strides=(2,)), torch.zeros(2, 3, 8, 8),
         r"^CrossDUNet: `x` should have in_channels=1 channels \(dim 1 of \(B, C, H, W\)\), got shape \(2, 3, 8, 8\)\.$"),
        (CrossDUNet(2, 1, 3, channels=(4, 8), strides=(2,)), torch.zeros(1, 1, 8, 8, 8),
         r"^CrossDUNet: `x` should be 4D \(B, C, H, W\) for spatial_dims=2, got shape \(1, 1, 8, 8, 8\)\.$"),
    ],
)  # fmt: skip
def test_network_input_checks(net, x, message):
    with pytest.raises(ValueError, match=message):
        net(x)


def test_network_input_type():
    with pytest.raises(TypeError, match=r"^CrossDUNet: `x` should be a torch.Tensor, got ndarray\.$"):
        CrossDUNet(2, 1, 3, channels=(4, 8), strides=(2,))(np.zeros((1, 1, 8, 8), np.float32))


# ---- checkpoints -----------------------------------------------------------------------------------------


def _resnet(num_classes=2):
    return CrossDResNet(2, 1, num_classes, "basic", (1, 1), block_inplanes=(4, 8))


def test_pretrained_2d_other_architecture_class_count_and_prefix(tmp_path):
    path = tmp_path / "unet.pt"
    torch.save(CrossDUNet(2, 1, 2, channels=(4, 8), strides=(2,)).state_dict(), path)
    with pytest.raises(ValueError, match=rf"^`path` '{re.escape(str(path))}' does not fit `model`: \d+ missing keys: conv1.weight, .*; \d+ unexpected keys: model\.0\..*Pass strict=False"):
        load_pretrained_2d(_resnet(), path)

    path = tmp_path / "classes.pt"
    torch.save(_resnet(5).state_dict(), path)
    with pytest.raises(ValueError, match=r"2 mismatched keys: fc.weight \(checkpoint 'fc.weight' \(5, 8\) vs model \(2, 8\)\), fc.bias \(checkpoint 'fc.bias' \(5,\) vs model \(2,\)\)\."):
        load_pretrained_2d(_resnet(2), path, classifier=None)
    assert load_pretrained_2d(_resnet(2), path).initialised["fc.weight"].startswith("classifier re-initialised")

    path = tmp_path / "prefixed.pt"
    torch.save({f"trunk.{k}": v for k, v in _resnet().state_dict().items()}, path)  # known prefixes are stripped
    with pytest.raises(ValueError, match=r"\d+ missing keys: conv1.weight, .*; \d+ unexpected keys: trunk.conv1.weight, "):
        load_pretrained_2d(_resnet(), path)
    torch.save({f"module.{k}": v for k, v in _resnet().state_dict().items()}, path)
    assert load_pretrained_2d(_resnet(), path).renamed["conv1.weight"] == "module.conv1.weight"


def _engine():
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 1
    return engine


def test_bundle_checkpoint_loaders_list_the_keys(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_resnet(5).state_dict(), path)
    loader = CheckedCheckpointLoader(load_path=str(path), load_dict={"model": _resnet(2)})
    with pytest.raises(ValueError, match=rf"^checkpoint '{re.escape(str(path))}' could not be loaded: `model` \(CrossDResNet\) does not fit: 2 mismatched keys: fc.weight \(checkpoint \(5, 8\) vs model \(2, 8\)\), fc.bias \(checkpoint \(5,\) vs model \(2,\)\)\.$"):
        loader(_engine())

    torch.save({f"module.{k}": v for k, v in _resnet().state_dict().items()}, path)
    with pytest.raises(ValueError, match=r"does not fit: \d+ missing keys: conv1.weight, .*; \d+ unexpected keys: module.conv1.weight, .*; every unexpected key starts with 'module.': strip the prefix\.$"):
        CheckedCheckpointLoader(load_path=str(path), load_dict={"model": _resnet()})(_engine())

    torch.save({"model": crossd_resnet18(2, 1, 2).state_dict(), "optimizer": {}}, path)  # resume: other network
    engine = _engine()
    ResumeCheckpointLoader(load_path=str(path), load_dict={"model": _resnet()}).attach(engine)
    with pytest.raises(ValueError, match=r"^checkpoint '.*model.pt' could not be loaded: `model` \(CrossDResNet\) does not fit: \d+ unexpected keys: layer1\.1\.conv1\.weight, .*; \d+ mismatched keys: conv1\.weight \(checkpoint \(64, 1, 7, 7, 7\) vs model \(4, 1, 7, 7, 7\)\)"):
        engine.run([0], max_epochs=1)

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^checkpoint '.*model.pt' could not be loaded: not a readable checkpoint \(truncated or corrupt\?\)"):
        CheckedCheckpointLoader(load_path=str(path), load_dict={"model": _resnet()})(_engine())
    with pytest.raises(ValueError, match=r"^`load_path` should be an existing checkpoint, got '.*nope.pt'\.$"):
        CheckedCheckpointLoader(load_path=str(tmp_path / "nope.pt"), load_dict={"model": _resnet()})(_engine())


# ---- datalists -------------------------------------------------------------------------------------------


def test_check_datalist_messages():
    with pytest.raises(ValueError, match=r"^train_datalist is empty: no item to read\.$"):
        check_datalist([], "train_datalist")
    with pytest.raises(ValueError, match=r"^val_datalist item 1 has no 'image' key; its keys are \['img', 'label'\]\.$"):
        check_datalist([{"image": "a.nii.gz", "label": 0}, {"img": "b.nii.gz", "label": 1}], "val_datalist")
    with pytest.raises(ValueError, match=r"^datalist item 2 \('c.nii.gz'\): 'label' 3 is out of range for num_classes=2 \(expected an int in \[0, 1\]\)\.$"):
        check_datalist([{"image": f"{c}.nii.gz", "label": i} for i, c in enumerate("ab")] + [{"image": "c.nii.gz", "label": 3}], num_classes=2)
    with pytest.raises(ValueError, match=r"^datalist item 0: 'label' -1 is out of range"):
        check_datalist([{"image": np.zeros(2), "label": np.array([-1])}], num_classes=2)
    with pytest.raises(TypeError, match=r"^datalist should be a list of dicts, got dict\.$"):
        check_datalist({"image": "a"})
    good = [{"image": "a", "label": "a_seg.nii.gz"}, {"image": "b", "label": [0, 1]}]
    assert check_datalist(good, num_classes=2) is good


def test_vessel_bundle_rejects_mislabelled_datalist(shared_data, tmp_path):
    bad = [{"image": np.zeros((1, 28, 28, 28), np.float32), "label": 0}, {"image": np.zeros((1, 28, 28, 28), np.float32), "label": 2}]
    with pytest.raises(RuntimeError) as info:
        _parsed(VESSEL / "configs" / "train.json", "train#dataset", train_datalist=bad, ckpt_dir=str(tmp_path))
    _raised(info, ValueError, r"^train_datalist item 1: 'label' 2 is out of range for num_classes=2 \(expected an int in \[0, 1\]\)\.$")
    with pytest.raises(RuntimeError) as info:
        _parsed(VESSEL / "configs" / "train.json", "validate#dataset", val_datalist=[], ckpt_dir=str(tmp_path))
    _raised(info, ValueError, r"^val_datalist is empty: no item to read\.$")


def test_bundle_configs_use_the_checked_loaders():
    """Every bundle loads checkpoints through CheckedCheckpointLoader, and the image bundles read through CheckedLoadImaged."""
    import json

    configs = sorted((REPO / "bundles").glob("*/configs/*.json"))
    text = {p: p.read_text() for p in configs}
    assert not [p for p, t in text.items() if '"_target_": "CheckpointLoader"' in t or '"_target_": "LoadImaged"' in t
                and "pretrain2d" not in str(p)]  # fmt: skip
    for name in ("crossd_brats", "crossd_hippocampus_segmentation"):
        for config in ("train.json", "inference.json"):
            content = json.loads((REPO / "bundles" / name / "configs" / config).read_text())
            assert "monai_crossd.apps.data.CheckFinited" in json.dumps(content), (name, config)


def test_checked_loader_settings_reach_monai_loader(nifti):
    """MONAI Label switches ``_loader.image_only`` off on the bundle's loader: the setting must reach MONAI's LoadImage."""
    load = CheckedLoadImaged("image", reader="NibabelReader", image_only=True)
    load._loader.image_only = False
    out = load({"image": str(nifti["image"])})
    assert "image_meta_dict" in out and out["image"].ndim == 3
