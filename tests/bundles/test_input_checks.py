"""The bundles check their inputs against their metadata.json: real bundle runs on real files broken from
``../shared/data`` fail with the file and the reason and write nothing for them, or go on with a warning when
``--allow_unexpected_inputs True`` is passed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_crossd.apps.data import CheckedLoadImaged, CheckInputd, CheckLabelsd
from tests.bundles._helpers import output_dirs

REPO = Path(__file__).resolve().parents[2]
HIPPO = REPO / "bundles" / "crossd_hippocampus_segmentation"
BRATS = REPO / "bundles" / "crossd_brats"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _run(config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def _files(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]


def _parsed(config: Path, *ids: str, **override):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update(override)
    return [parser.get_parsed_content(i) for i in ids]


@pytest.mark.parametrize(
    "bundle, config, ids, keys",
    [
        (HIPPO, "inference.json", ["preprocessing"], ["image"]),
        (HIPPO, "train.json", ["train#preprocessing", "validate#preprocessing"], ["image"]),
        (BRATS, "inference.json", ["preprocessing"], ["FLAIR", "T1w", "T1wCE", "T2w"]),
        (BRATS, "train.json", ["validate#preprocessing"], ["FLAIR", "T1w", "T1wCE", "T2w"]),
    ],
)
def test_checks_follow_the_loader_with_the_metadata_expectations(bundle, config, ids, keys, tmp_path):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    for compose in _parsed(bundle / "configs" / config, *ids, ckpt_dir=str(tmp_path)):
        loader, check = compose.transforms[:2]
        assert isinstance(loader, CheckedLoadImaged) and isinstance(check, CheckInputd)
        assert list(check.keys) == keys
        assert check.modality == meta["modality"] == "MR"
        assert check.spatial_dims == len(meta["spatial_shape"]) == 3
        assert check.num_channels == meta["num_channels"] and check.allow_unexpected is False
        if bundle == HIPPO and config == "train.json":
            assert isinstance(compose.transforms[2], CheckLabelsd) and compose.transforms[2].num_classes == 3


# ---- crossd_hippocampus_segmentation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hippo_inputs(tmp_path_factory, shared_data):
    """A CT-like volume (a real MR rescaled to Hounsfield-like values) alone in an input folder, and a checkpoint of
    the default inference network (untrained: the checks run before it matters)."""
    from monai_crossd.networks.nets import CrossDUNet

    root = tmp_path_factory.mktemp("hippo_inputs")
    source = nib.load(shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz")
    values = np.asarray(source.dataobj).astype(np.float32)
    low, high = values.min(), np.percentile(values, 99.5)
    hounsfield = np.clip((values - low) / (high - low) * 2000 - 1000, -1024, 3071).astype(np.int16)
    (root / "in").mkdir()
    nib.save(nib.Nifti1Image(hounsfield, source.affine), root / "in" / "ct_like.nii.gz")
    (root / "models").mkdir()
    net = CrossDUNet(3, 1, 3, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=0, up_mode="deconv")
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_hippocampus_inference_refuses_a_ct_like_volume(hippo_inputs, tmp_path):
    bad = hippo_inputs / "in" / "ct_like.nii.gz"
    out = tmp_path / "out"
    done = _run(HIPPO / "configs" / "inference.json", "--input_dir", str(bad.parent), "--ckpt_dir",
                str(hippo_inputs / "models"), "--output_dir", str(out))  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    assert re.search(rf"key 'image' file '{re.escape(str(bad))}' looks like CT in Hounsfield units, expected MR", text)
    assert "--allow_unexpected_inputs True" in text
    assert not _files(out), _files(out)


def test_hippocampus_inference_override_warns_and_writes_the_mask(hippo_inputs, tmp_path):
    bad = hippo_inputs / "in" / "ct_like.nii.gz"
    out = tmp_path / "out"
    done = _run(HIPPO / "configs" / "inference.json", "--input_dir", str(bad.parent), "--ckpt_dir",
                str(hippo_inputs / "models"), "--output_dir", str(out), "--allow_unexpected_inputs", "True")  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert re.search(rf"UserWarning: key 'image' file '{re.escape(str(bad))}' looks like CT .*going on", text)
    mask = nib.load(out / "ct_like_seg.nii.gz")
    assert mask.shape == nib.load(bad).shape


def test_hippocampus_training_refuses_a_label_7(shared_data, tmp_path):
    from monai.bundle import ConfigWorkflow

    image = shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    label = nib.load(shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    values = np.asarray(label.dataobj).astype(np.uint8)
    values[values == 2] = 7
    bad = tmp_path / "label_7.nii.gz"
    nib.save(nib.Nifti1Image(values, label.affine), bad)
    item = {"image": str(image), "label": str(bad)}
    dirs = output_dirs(tmp_path / "run")
    workflow = ConfigWorkflow(
        config_file=str(HIPPO / "configs" / "train.json"), workflow_type="train", max_epochs=1,
        channels=[4, 8, 16, 32], train_datalist=[item], val_datalist=[item], **dirs,
    )  # fmt: skip
    with pytest.raises(Exception) as info:
        workflow.initialize()
        workflow.run()
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    message = rf"^key 'label' file '{re.escape(str(bad))}' has values \[7\] that are not class indices in \[0, 2\]"
    assert any(re.search(message, m) for m in chain), chain
    assert not [p for p in _files(*map(Path, dirs.values())) if p.suffix in (".pt", ".json", ".tmp")]


# ---- crossd_brats ------------------------------------------------------------------------------------------------


@pytest.fixture
def brats_inputs(shared_data, tmp_path):
    """Study3's four series with the T2w one moved 400 mm along z, and a small network's checkpoint and config."""
    import pydicom

    from monai_crossd.networks.nets import crossd_resnet18

    study = tmp_path / "study"
    for name in ("36468-FLAIRreg-58706", "26401-T1prereg-52906", "11-T1post-18670", "37830-T2reg-78532"):
        shutil.copytree(shared_data / "dicom" / "brain_tumor_progression" / "Study3" / name, study / name)
    for path in (study / "37830-T2reg-78532").iterdir():
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 400.0]
        ds.save_as(path)
    models = tmp_path / "models"
    models.mkdir()
    widths = [4, 8, 16, 32]
    torch.save(crossd_resnet18(3, 4, 2, block_inplanes=widths).state_dict(), models / "model.pt")
    config = {"image_size": [32, 32, 32], "network_widths": widths, "pixdim": [1.0, 1.0, 1.0],
              "modalities": ["FLAIR", "T1w", "T1wCE", "T2w"], "num_classes": 2, "class_names": ["a", "b"], "data": "test"}  # fmt: skip
    (models / "model_config.json").write_text(json.dumps(config))
    return study, models


def test_brats_inference_refuses_a_study_whose_series_do_not_overlap(brats_inputs, tmp_path):
    study, models = brats_inputs
    out = tmp_path / "out"
    done = _run(BRATS / "configs" / "inference.json", "--input_dir", str(study), "--ckpt_dir", str(models),
                "--output_dir", str(out))  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    flair, t2w = study / "36468-FLAIRreg-58706", study / "37830-T2reg-78532"
    assert re.search(
        rf"key 'FLAIR' file '{re.escape(str(flair))}' and key 'T2w' file '{re.escape(str(t2w))}' do not overlap in "
        r"space: .* share 0% of the smaller one, expected at least 50%",
        text,
    ), text[-3000:]
    assert not _files(out), _files(out)
