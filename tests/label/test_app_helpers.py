"""Unit tests of the MONAI Label app's helpers that need no MONAI Label (``lib/bundles.py``, ``lib/transforms.py``).

They run in the main environment: the two modules import only numpy, torch and MONAI.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "apps" / "monailabel_crossd" / "lib"
STUDY3 = REPO.parent / "shared" / "data" / "dicom" / "brain_tumor_progression" / "Study3"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_crossd_label_{name}", LIB / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bundles = _load("bundles")
transforms = _load("transforms")


def _fake_bundle(root: Path, name: str, kind: str = "segmentation") -> Path:
    b = root / name
    (b / "configs").mkdir(parents=True)
    out_type = "probabilities" if kind == "classification" else "image"
    meta = {
        "version": "0.1.0",
        "network_data_format": {"inputs": {"image": {}}, "outputs": {"pred": {"type": out_type}}},
    }
    (b / "configs" / "metadata.json").write_text(json.dumps(meta))
    (b / "configs" / "inference.json").write_text(
        json.dumps(
            {"network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}}
        )
    )
    return b


def test_resolve_models_and_errors(tmp_path):
    _fake_bundle(tmp_path, "crossd_hippocampus_segmentation")
    assert list(bundles.resolve_models(None, tmp_path)) == ["crossd_hippocampus_segmentation"]
    assert list(bundles.resolve_models("all", tmp_path)) == ["crossd_hippocampus_segmentation"]
    with pytest.raises(ValueError, match=r"`models` names bundle 'nope'.*crossd_hippocampus_segmentation"):
        bundles.resolve_models("nope", tmp_path)
    with pytest.raises(ValueError, match="`bundles_dir`"):
        bundles.resolve_models(None, tmp_path / "missing")


def test_bundle_kind():
    assert bundles.bundle_kind("crossd_brats") == "classification"
    assert bundles.bundle_kind("crossd_hippocampus_segmentation") == "segmentation"
    meta = {"network_data_format": {"outputs": {"pred": {"type": "probabilities"}}}}
    assert bundles.bundle_kind("other", meta) == "classification"
    assert bundles.bundle_kind("other", {}) == "segmentation"


def test_stage_bundle_keeps_trained_weights(tmp_path):
    src = _fake_bundle(tmp_path / "repo", "b")
    (src / "models").mkdir()
    (src / "models" / "model.pt").write_bytes(b"repo")
    (src / "models" / "last.pt").write_bytes(b"resume state")
    (src / "models" / "model_config.json").write_text("{}")
    (src / "eval").mkdir()
    dst = bundles.stage_bundle(src, tmp_path / "work")
    assert (dst / "configs" / "metadata.json").is_file() and not (dst / "eval").exists()
    assert sorted(p.name for p in (dst / "models").iterdir()) == ["model.pt", "model_config.json"]
    (dst / "models" / "model.pt").write_bytes(b"trained in MONAI Label")
    (src / "configs" / "extra.json").write_text("{}")
    bundles.stage_bundle(src, tmp_path / "work")
    assert (dst / "models" / "model.pt").read_bytes() == b"trained in MONAI Label"  # kept
    assert (dst / "configs" / "extra.json").is_file()  # configs refreshed
    assert (src / "models" / "model.pt").read_bytes() == b"repo"  # source untouched


def test_stage_bundle_takes_shipped_weights(tmp_path):
    src = _fake_bundle(tmp_path / "repo", "b")
    shipped = src / "models" / "shipped"
    shipped.mkdir(parents=True)
    (shipped / "model.pt").write_bytes(b"shipped")
    (shipped / "model_config.json").write_text("{}")
    (shipped / "metrics.json").write_text("{}")
    dst = bundles.stage_bundle(src, tmp_path / "work")
    assert sorted(p.name for p in (dst / "models").iterdir()) == ["metrics.json", "model.pt", "model_config.json"]
    assert (dst / "models" / "model.pt").read_bytes() == b"shipped"
    assert bundles.ensure_checkpoint(dst) == dst / "models" / "model.pt"  # no initial weights over them
    assert (dst / "models" / "model.pt").read_bytes() == b"shipped"
    (src / "models" / "model.pt").write_bytes(b"trained")  # a trained checkpoint in the repository wins...
    (src / "models" / "model_config.json").write_text("{}")
    assert (bundles.stage_bundle(src, tmp_path / "other") / "models" / "model.pt").read_bytes() == b"trained"
    bundles.stage_bundle(src, tmp_path / "work")  # ...but never replaces the weights of a working copy
    assert (dst / "models" / "model.pt").read_bytes() == b"shipped"


def test_ensure_checkpoint(tmp_path):
    b = _fake_bundle(tmp_path, "b")
    ckpt = bundles.ensure_checkpoint(b)
    sd = torch.load(ckpt)
    assert set(sd) == {"weight", "bias"} and sd["weight"].shape == (2, 1, 1, 1, 1)
    assert bundles.ensure_checkpoint(b) == ckpt  # an existing checkpoint is left alone
    (b / "configs" / "inference.json").unlink()
    (b / "models" / "model.pt").unlink()
    with pytest.raises(ValueError, match="no inference config"):
        bundles.ensure_checkpoint(b)


def test_stash_image_path():
    t = transforms.StashImagePathd(result_dtype="uint8")
    d = t({"image": "/x/a.nii.gz", "image_path": "/x/a.nii.gz"})
    assert "image_path" not in d and d["_crossd_image_path"] == "/x/a.nii.gz"
    assert d["result_extension"] == ".nii.gz" and d["result_dtype"] == "uint8"
    assert t({"image_path": "/dicom/series"})["result_extension"] == ".nii.gz"
    assert t({"image_path": "/x/a.nrrd", "result_extension": ".seg.nrrd"})["result_extension"] == ".seg.nrrd"


def test_to_probabilities():
    t = transforms.ToProbabilitiesd()
    p = t({"pred": torch.tensor([[2.0, -1.0]])})["pred"]
    torch.testing.assert_close(p.as_tensor(), torch.softmax(torch.tensor([2.0, -1.0]), 0))
    p = t({"pred": torch.tensor([0.25, 0.75])})["pred"]  # already probabilities
    torch.testing.assert_close(p.as_tensor(), torch.tensor([0.25, 0.75]))


def test_load_study_wrong_channels(tmp_path):
    f = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), str(f))
    with pytest.raises(ValueError, match=r"`image` should be a 4D image with 4 channels"):
        transforms.LoadStudyd()({"image": str(f)})


def test_load_study_nifti_and_dicom_agree(tmp_path):
    if not STUDY3.is_dir():
        pytest.skip(f"shared data not found at {STUDY3}")
    mods = ("FLAIR", "T1w", "T1wCE", "T2w")
    split = transforms.LoadStudyd(modalities=mods, split=True)({"image": str(STUDY3)})
    assert all(split[m].shape[0] == 1 for m in mods)
    stacked = transforms.LoadStudyd(modalities=mods)({"image": str(STUDY3)})["image"]
    assert stacked.shape[0] == 4 and stacked.shape[1:] == split["FLAIR"].shape[1:]
    f = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(stacked.numpy(), 0, -1), np.asarray(stacked.affine, np.float64)), str(f))
    again = transforms.LoadStudyd(modalities=mods, split=True)({"image": str(f)})
    for i, m in enumerate(mods):
        np.testing.assert_allclose(again[m].numpy()[0], stacked.numpy()[i], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(again[m].affine), np.asarray(split[m].affine), atol=1e-4)
    assert transforms.is_dicom_series(STUDY3 / "11-T1post-18670") and not transforms.is_dicom_series(STUDY3)
