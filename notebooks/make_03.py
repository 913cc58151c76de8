"""Builds and executes notebooks/03_bundles.ipynb (run from the repo root)."""
import nbformat as nbf
from nbclient import NotebookClient

cells = [
    nbf.v4.new_markdown_cell("""# 03 · The MONAI bundles: train, watch, infer

`monai_crossd` ships its models as MONAI bundles (model-zoo layout) under `bundles/`. This notebook:

1. chains two of them on real data: `crossd_pretrain2d` trains a 2D Cross-D prior on MedMNIST 2D images, and
   `crossd_vessel_classification` starts its 3D network from that prior (`pretrained_2d`) on VesselMNIST3D;
2. reads the training curves back from the TensorBoard event files;
3. trains `crossd_brats` on its synthetic demo and runs its `inference.json` on a real 4-series brain tumour
   DICOM study (TCIA Brain-Tumor-Progression, PGBM-003), showing the four modalities and the predicted probabilities.

Every run uses tiny overrides (few samples and epochs, narrow networks) so that the notebook executes in a couple of
minutes on a CPU, and writes into a temporary folder: nothing in `bundles/` is overwritten. The same overrides work
on the command line, e.g.

```bash
python -m monai.bundle run --config_file bundles/crossd_vessel_classification/configs/train.json \\
    --max_epochs 4 --max_train_samples 128 --widths "[8,16,32,64]" --ckpt_dir /tmp/vessel/models
```"""),
    nbf.v4.new_code_cell("""import os

os.environ["TQDM_DISABLE"] = "1"  # no progress bars in the executed notebook (read when tqdm is imported)
import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

torch.set_num_threads(1)  # small runs on a shared CPU
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
logging.getLogger("monai_crossd").setLevel(logging.INFO)  # what the package reports (data, weights, parameters)
logging.getLogger("monai.bundle.workflows").setLevel(logging.ERROR)  # "logging file is set to False"
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)  # no GPU decoder on a CPU
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
warnings.filterwarnings("ignore", message="IProgress not found")  # ignite's progress bar, disabled above
STARTED = time.time()
REPO = Path("..").resolve()
if not (REPO / "bundles").is_dir():
    REPO = Path.cwd().resolve().parent
BUNDLES = REPO / "bundles"
DATA = REPO.parent / "shared" / "data"
STUDY3 = DATA / "dicom" / "brain_tumor_progression" / "Study3"
WORK = Path(tempfile.mkdtemp(prefix="crossd_nb03_"))  # every output of this notebook
WIDTHS = [8, 16, 32, 64]  # tiny networks (the bundles default to 16-128 or 64-512)

for meta in sorted(BUNDLES.glob("*/configs/metadata.json")):
    m = json.loads(meta.read_text())
    print(f"{meta.parts[-3]:34s} {m['name']}  (v{m['version']})")


def run_bundle(config_file, workflow_type="train", **override):
    \"\"\"What `python -m monai.bundle run` does, in this process: parse, override, initialise, run, finalise.\"\"\"
    start = time.time()
    # logging_file=False: keep this notebook's logging (the bundles' logging.conf logs every iteration)
    workflow = ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, logging_file=False, **override)
    workflow.initialize()
    logging.getLogger("monai.handlers.StatsHandler").setLevel(logging.WARNING)  # no per-iteration log lines
    workflow.run()
    workflow.finalize()
    print(f"{Path(config_file if isinstance(config_file, str) else config_file[-1]).name}: {time.time() - start:.0f}s")
    return workflow


def dirs(name):
    return {k: str(WORK / name / v) for k, v in (("ckpt_dir", "models"), ("output_dir", "eval"), ("log_dir", "runs"))}"""),
    nbf.v4.new_markdown_cell("""## 1. A 2D prior, then a 3D classifier that starts from it
`crossd_pretrain2d` trains a 2D Cross-D ResNet18 on BreastMNIST + PneumoniaMNIST (real, 4 classes). Its
`models/model.pt` goes to `crossd_vessel_classification` as `pretrained_2d`: the 3D network's knowledge bases,
norms and rotation networks come from the 2D checkpoint (`load_pretrained_2d`, strict), the head is new."""),
    nbf.v4.new_code_cell("""run_bundle(str(BUNDLES / "crossd_pretrain2d" / "configs" / "train.json"), **dirs("pretrain2d"),
           max_epochs=3, max_train_samples=256, max_val_samples=64, batch_size=32, widths=WIDTHS, prefer_full_data=False)
prior = WORK / "pretrain2d" / "models" / "model.pt"

run_bundle(str(BUNDLES / "crossd_vessel_classification" / "configs" / "train.json"), **dirs("vessel"),
           pretrained_2d=str(prior), max_epochs=4, max_train_samples=128, max_val_samples=96, batch_size=16, widths=WIDTHS)
for name in ("pretrain2d", "vessel"):
    for h in json.loads((WORK / name / "eval" / "train_metrics.json").read_text())["history"]:
        print(f"{name:10s} epoch {h['epoch']}: " + ", ".join(f"{k} {v:.3f}" for k, v in h.items() if k.startswith("val_")))
print("files:", sorted(str(p.relative_to(WORK)) for p in (WORK / "vessel").rglob("*") if p.is_file()))"""),
    nbf.v4.new_markdown_cell("""## 2. Training curves from the TensorBoard event files
The bundles log with MONAI's `TensorBoardStatsHandler` (`train_loss` every iteration, validation metrics every
epoch) into `log_dir`. `tensorboard --logdir <log_dir>` shows them live; here `EventAccumulator` reads them back."""),
    nbf.v4.new_code_cell("""def scalars(log_dir):
    \"\"\"{tag: (steps, values)} from every event file of a log folder.\"\"\"
    out = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            out[tag] = ([e.step for e in events], [e.value for e in events])
    return out


logs = {"crossd_pretrain2d (2D)": scalars(WORK / "pretrain2d" / "runs"),
        "crossd_vessel_classification (3D)": scalars(WORK / "vessel" / "runs")}
print({name: sorted(tags) for name, tags in logs.items()})
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for col, (name, tags) in enumerate(logs.items()):
    ax_loss, ax_val = axes[2 * col], axes[2 * col + 1]
    steps, values = tags["train_loss"]
    ax_loss.plot(steps, values, ".-", lw=0.8, alpha=0.5, label="per iteration")
    window = 8
    smooth = [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]
    ax_loss.plot(steps, smooth, "-", lw=2, color="tab:blue", label=f"running mean of {window}")
    ax_loss.legend(fontsize=8)
    ax_loss.set_xlabel("iteration"); ax_loss.set_ylabel("train_loss"); ax_loss.set_title(f"{name}: loss", fontsize=10)
    for tag in sorted(t for t in tags if t.startswith("val_")):
        ax_val.plot(*tags[tag], "o-", label=tag)
    ax_val.set_xlabel("epoch"); ax_val.set_ylim(0, 1.02)
    ax_val.set_xticks(tags["val_auc"][0]); ax_val.legend(fontsize=8, loc="lower right")
    ax_val.set_title(f"{name}: validation", fontsize=10)
fig.suptitle("TensorBoard scalars of two tiny bundle runs on real MedMNIST data (a few epochs: a pipeline demo, not a benchmark)", fontsize=11)
plt.tight_layout(); plt.show()"""),
    nbf.v4.new_markdown_cell("""## 3. `crossd_brats`: inference on a real DICOM study
Without `--dataset_dir`, `crossd_brats` trains on a generated **synthetic** DICOM demo (a pipeline check): the
probabilities below come from a model that has never seen a real tumour, and mean nothing clinically. With real
RSNA-MICCAI or BraTS data (`--dataset_dir`) the same commands train the real classifier.

`inference.json` reads a study folder with one DICOM series per modality, matches the series to `FLAIR, T1w,
T1wCE, T2w` by name, reorients to RAS, resamples to 1 mm, resizes to the model's input size and writes
`predictions.json`/`.csv`. It runs here through the command line, exactly as a user would."""),
    nbf.v4.new_code_cell("""brats = BUNDLES / "crossd_brats" / "configs"
run_bundle(str(brats / "train.json"), bundle_root=str(WORK / "brats"), max_epochs=2,
           demo_num_cases=8, demo_spatial_size=[16, 16, 16], demo_widths=WIDTHS)

start = time.time()
cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(brats / "inference.json"),
       "--input_dir", str(STUDY3), "--ckpt_dir", str(WORK / "brats" / "models"), "--output_dir", str(WORK / "brats_out")]
done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                      capture_output=True, text=True, timeout=600)
if done.returncode:
    raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
print(f"python -m monai.bundle run --config_file bundles/crossd_brats/configs/inference.json ...: {time.time() - start:.0f}s")
result = json.loads((WORK / "brats_out" / "predictions.json").read_text())
print(json.dumps({k: result[k] for k in ("series", "trained_on", "predictions")}, indent=1))"""),
    nbf.v4.new_markdown_cell("""The same preprocessing, taken from `inference.json` itself (`ConfigParser`), shows what the network sees:
the four series after reorientation and 1 mm resampling (top), and the network input after the resize to the
model's input size, here the tiny demo model's 16³ (bottom)."""),
    nbf.v4.new_code_cell("""parser = ConfigParser()
parser.read_config(str(brats / "inference.json"))
parser.update({"bundle_root": str(brats.parent), "input_dir": str(STUDY3), "ckpt_dir": str(WORK / "brats" / "models")})
datalist, transforms = parser.get_parsed_content("datalist"), parser.get_parsed_content("preprocessing").transforms
modalities = parser.get_parsed_content("modalities")
names = [t.__class__.__name__ for t in transforms]
concat = names.index("DeleteItemsd") + 1  # up to the concatenated 1 mm volume, before the resize
item = dict(datalist[0])
for t in transforms[:concat]:
    item = t(item)
volume = item["image"]  # (4, X, Y, Z), RAS, 1 mm
net_input = item
for t in transforms[concat:]:
    net_input = t(net_input)
net_input = net_input["image"]
print("1 mm volume:", tuple(volume.shape), "| network input:", tuple(net_input.shape))

pred = result["predictions"][0]
probs = ", ".join(f"{name} {pred[f'prob_{i}']:.2f}" for i, name in enumerate(result["class_names"]))
fig, axes = plt.subplots(2, 4, figsize=(12, 6.6), gridspec_kw={"height_ratios": [1.3, 1]})
z, zn = volume.shape[-1] // 2, net_input.shape[-1] // 2
for c, name in enumerate(modalities):
    top, bottom = volume[c, :, :, z], net_input[c, :, :, zn]
    lo, hi = torch.quantile(top.flatten().float(), torch.tensor([0.01, 0.995])).tolist()
    axes[0, c].imshow(top.T, cmap="gray", origin="lower", vmin=lo, vmax=hi)  # RAS: anterior up, patient right on the right
    axes[0, c].set_title(f"{name}\\n{Path(result['series'][name]).name}", fontsize=10)
    axes[1, c].imshow(bottom.T, cmap="gray", origin="lower")
    axes[1, c].set_title(f"{name}: network input", fontsize=10)
for a in axes.flat:
    a.axis("off")
fig.suptitle(f"Study3 (TCIA PGBM-003), axial slice {z} of the 1 mm volume | prediction: {probs}\\n"
             "(model trained 2 epochs on SYNTHETIC demo data: a pipeline check, not a diagnosis)", fontsize=11)
plt.tight_layout(); plt.show()
print(f"notebook ran in {time.time() - STARTED:.0f}s")"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
nbf.write(nb, "notebooks/03_bundles.ipynb")
