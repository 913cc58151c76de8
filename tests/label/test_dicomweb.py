"""The MONAI Label app on a real PACS: Orthanc's DICOMweb as the datastore, results stored back, OHIF in Chromium.

A real ``monailabel start_server`` (from ``.venv-label``) serves ``crossd_hippocampus_segmentation`` and
``crossd_brats`` with ``--studies <orthanc>/dicom-web`` (the session's Orthanc, ``tests/pacs``, holding the
hippocampus-crop MR series and the 4-series brain tumour study), credentials in MONAI Label's own environment
settings. Every outbound HTTP(S) connection of the server is routed to a local trap proxy (``HTTP(S)_PROXY``; only
127.0.0.1 is exempt): the test asserts that none arrives (MONAI Label would download dcmqi at start-up).

- ``test_dicomweb_seg_and_sr``: ``/datastore`` counts the MR series; segmentation of the stored hippocampus series
  stores a DICOM SEG in Orthanc, read back over QIDO/WADO and compared with the label returned by the same request
  (geometry, segment names, voxels, references to the source instances); ``{"store_result": false}`` stores nothing;
  the classifier on the brain study stores a DICOM SR whose probabilities are those of the response; no request
  reached the trap proxy, which does catch a download started with the server's environment.
- ``test_ohif_study_list``: MONAI Label's OHIF (``/ohif/``) in headless Chromium (selenium, ``/usr/bin/chromedriver``)
  lists both studies (patient names and IDs, accession numbers, instance counts); in the hippocampus study's viewer
  the stored SEG is listed, loads, and OHIF's segmentation panel shows its segments ``anterior`` and ``posterior``.
  Screenshots go to the test's tmp folder, and to ``docs/images/ohif_study_list.png`` and
  ``docs/images/ohif_viewer_seg.png`` when ``MONAI_CROSSD_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.apps.dicom.cases import assert_seg_on_series, dicom_files
from tests.label.test_monailabel_server import (
    APP,
    BUNDLES,
    LABEL_VENV,
    MONAILABEL,
    REPO,
    _free_port,
    _request,
    _stop,
    _tail,
    _wait_ready,
)

SEG = "crossd_hippocampus_segmentation"
CLS = "crossd_brats"
SCREENSHOT = REPO / "docs" / "images" / "ohif_study_list.png"
VIEWER_SCREENSHOT = REPO / "docs" / "images" / "ohif_viewer_seg.png"
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))

pytestmark = pytest.mark.skipif(
    not MONAILABEL.is_file(),
    reason=f"MONAI Label environment not built: {MONAILABEL} is missing (README 'MONAI Label')",
)


class TrapProxy:
    """A local TCP listener given to the server as its HTTP(S) proxy: it records every connection and closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(512))
                except OSError:
                    self.requests.append(b"")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(orthanc, tmp_path_factory):
    work = tmp_path_factory.mktemp("monailabel_dicomweb")
    port = _free_port()
    trap = TrapProxy()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy") and not k.startswith("MONAI_LABEL_")}
    env.update(
        PATH=f"{LABEL_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",  # dcmqi's itkimage2segimage (PyPI dcmqi)
        MONAI_LABEL_DICOMWEB_USERNAME=orthanc.auth[0],
        MONAI_LABEL_DICOMWEB_PASSWORD=orthanc.auth[1],
        MONAI_LABEL_DICOMWEB_CACHE_PATH=str(work / "cache"),
        MONAI_LABEL_SESSION_PATH=str(work / "sessions"),
        HTTP_PROXY=trap.url, HTTPS_PROXY=trap.url, http_proxy=trap.url, https_proxy=trap.url,
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )  # fmt: skip
    cmd = [
        str(MONAILABEL), "start_server",
        "--app", str(APP),
        "--studies", orthanc.dicomweb_url,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--conf", "models", f"{SEG},{CLS}",
        "--conf", "model_dir", str(work / "model"),
        "--conf", "bundles_dir", str(BUNDLES),
        "--conf", "skip_trainers", "true",
    ]  # fmt: skip
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, base, log)
            yield {"base": base, "log": log, "trap": trap, "work": work, "env": env}
        finally:
            _stop(proc)
            trap.close()


def _infer(server, model: str, image: str, output: str) -> tuple[dict, bytes | None]:
    """``POST /infer/<model>?image=..&output=..``: the result JSON and, for ``output=all``, the label file's bytes."""
    q = urllib.parse.urlencode({"image": image, "output": output})
    status, body = _request("POST", f"{server['base']}/infer/{model}?{q}")
    assert status == 200, f"infer {model} on {image}: HTTP {status} {body[:500]!r}\n{_tail(server['log'])}"
    if output == "json":
        return json.loads(body), None
    # output=all: multipart/related with the JSON "params" and the "image" (MONAI Label's MultipartEncoder)
    boundary = body.split(b"\r\n", 1)[0][2:].decode()
    message = email.parser.BytesParser().parsebytes(
        f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'.encode() + body
    )
    parts = {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.get_payload()
    }
    return json.loads(parts["params"]), parts["image"]


def _series_uid(folder: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def test_dicomweb_seg_and_sr(server, orthanc, hippocampus_series, brain_study_series, tmp_path):
    from monai.transforms import LoadImage

    from monai_crossd.apps.dicom import read_dicom_seg, read_dicom_sr

    client = orthanc.dicomweb_client()
    base = server["base"]

    # the datastore lists the five MR series (MONAI Label's own default filter, Modality=CT, would list none)
    status, body = _request("GET", f"{base}/datastore/?output=stats")
    assert status == 200, body[:300]
    assert json.loads(body)["total"] == 5, body[:300]
    status, body = _request("POST", f"{base}/activelearning/first", body={})
    assert status == 200, body[:300]
    mr_series = {s["0020000E"]["Value"][0] for s in client.search_for_series(search_filters={"Modality": "MR"})}
    assert json.loads(body)["id"] in mr_series

    # segmentation of the stored hippocampus series: a SEG stored in Orthanc
    study, series = _series_uid(hippocampus_series)
    params, label_bytes = _infer(server, SEG, series, "all")
    stored = params["pacs"]
    assert stored["Modality"] == "SEG" and stored["StudyInstanceUID"] == study, stored
    found = client.search_for_series(study_instance_uid=study, search_filters={"Modality": "SEG"})
    assert stored["SeriesInstanceUID"] in [s["0020000E"]["Value"][0] for s in found]  # QIDO finds it
    (seg,) = client.retrieve_series(study, stored["SeriesInstanceUID"])
    source = client.retrieve_series(study, series)

    label_file = tmp_path / "label.nii.gz"
    label_file.write_bytes(label_bytes)
    label = LoadImage(image_only=True)(str(label_file))  # the prediction the response carries, on the series' grid
    reference = LoadImage(image_only=True, reader="PydicomReader")(str(hippocampus_series))
    assert tuple(label.shape) == tuple(reference.shape) == (35, 51, 32), (label.shape, reference.shape)
    np.testing.assert_allclose(label.affine, reference.affine, atol=1e-4)
    predicted = np.asarray(label).astype(np.uint8)
    assert set(np.unique(predicted)) == {0, 1, 2}, np.unique(predicted)  # the shipped weights find both parts

    back, names = read_dicom_seg(seg, source)
    np.testing.assert_array_equal(back, predicted)
    assert names == {1: "anterior", 2: "posterior"}
    assert_seg_on_series(seg, source, f"monai_crossd {SEG}")

    # classifier on the brain study (image: any of its series): an SR with the response's probabilities
    brain_study, t1post = _series_uid(brain_study_series[0])
    result, _ = _infer(server, CLS, t1post, "json")
    scores = [p["score"] for p in sorted(result["prediction"], key=lambda p: p["idx"])]
    assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-4, result
    assert result["modalities"] == ["FLAIR", "T1w", "T1wCE", "T2w"], result
    stored = result["pacs"]
    assert stored["Modality"] == "SR" and stored["StudyInstanceUID"] == brain_study, stored
    (sr,) = client.retrieve_series(brain_study, stored["SeriesInstanceUID"])
    read = read_dicom_sr(sr)
    np.testing.assert_allclose(read["probabilities"], scores, atol=1e-6)
    assert read["class_names"] == [
        "class 0 (MGMT unmethylated; demo: no blob)", "class 1 (MGMT methylated; demo: blob)"
    ], read["class_names"]  # fmt: skip
    brain_mr = client.search_for_series(study_instance_uid=brain_study, search_filters={"Modality": "MR"})
    assert set(read["series_uids"]) == {s["0020000E"]["Value"][0] for s in brain_mr}

    # a request with {"store_result": false} stores nothing
    form = urllib.parse.urlencode({"params": json.dumps({"store_result": False})}).encode()
    q = urllib.parse.urlencode({"image": series, "output": "json"})
    request = urllib.request.Request(f"{base}/infer/{SEG}?{q}", data=form, method="POST")
    with urllib.request.urlopen(request, timeout=120) as r:
        assert "pacs" not in json.loads(r.read())
    assert len(client.search_for_series(study_instance_uid=study, search_filters={"Modality": "SEG"})) == len(found)

    # nothing left this machine: no request reached the trap proxy (e.g. MONAI Label's dcmqi download) ...
    trap = server["trap"]
    assert trap.requests == [], trap.requests
    # ... where, with the server's environment, a download from GitHub does arrive (the trap works)
    fetch = "import urllib.request; urllib.request.urlopen('https://github.com/QIICR/dcmqi/releases', timeout=10)"
    run = subprocess.run([str(LABEL_VENV / "bin" / "python"), "-c", fetch], env=server["env"], capture_output=True)
    assert run.returncode != 0
    deadline = time.monotonic() + 10
    while not trap.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [r.split(b" ")[:2] for r in trap.requests] == [[b"CONNECT", b"github.com:443"]], trap.requests


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary; skips when it, chromedriver or selenium is missing (before any server starts)."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    if not CHROMEDRIVER.is_file():
        pytest.skip(f"chromedriver not found at {CHROMEDRIVER} (Debian: apt-get install chromium-driver)")
    return browser


def _chrome(browser: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.add_argument("--proxy-server=direct://")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _wait_text(driver, texts: list[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        page = driver.find_element("tag name", "body").text
        if all(t in page for t in texts):
            return page
        time.sleep(1)
    raise AssertionError(
        f"{texts} not all on the page {driver.current_url} after {timeout}s; page text:\n{page[:2000]}"
    )


def _CY(name: str) -> tuple[str, str]:
    """Selenium locator of OHIF's ``data-cy`` test attribute."""
    return ("css selector", f'[data-cy="{name}"]')


def _update_screenshot(shot: Path, committed: Path) -> None:
    """Copy ``shot`` over the committed screenshot (atomically) when ``MONAI_CROSSD_UPDATE_SCREENSHOT=1``."""
    if os.environ.get("MONAI_CROSSD_UPDATE_SCREENSHOT") != "1":
        return
    committed.parent.mkdir(parents=True, exist_ok=True)
    tmp = committed.with_suffix(".png.tmp")
    shutil.copyfile(shot, tmp)
    os.replace(tmp, committed)


def _dismiss_banner(driver) -> None:
    for button in driver.find_elements("xpath", "//*[normalize-space(text())='Confirm and Hide']"):
        button.click()  # OHIF's "investigational use only" banner, over the study list


def test_ohif_study_list(chromium, server, orthanc, hippocampus_series, brain_study_series, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    client = orthanc.dicomweb_client()
    hippo_study, hippo_series = _series_uid(hippocampus_series)
    if not client.search_for_series(study_instance_uid=hippo_study, search_filters={"Modality": "SEG"}):
        _infer(server, SEG, hippo_series, "json")  # run alone: store the SEG the viewer should list
    expected = []  # what the study list shows per study: patient name, patient ID, accession number, instances
    for folder in (hippocampus_series, brain_study_series[0]):
        ds = pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True)
        (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
        instances = str(study["00201208"]["Value"][0])  # NumberOfStudyRelatedInstances, results included
        name = ds.PatientName
        expected += [f"{name.family_name}, {name.given_name}", str(ds.PatientID), str(ds.AccessionNumber), instances]
    driver = _chrome(chromium)
    try:
        # the study list (QIDO-RS through MONAI Label's DICOMweb proxy, with its credentials): both studies
        driver.get(f"{server['base']}/ohif/")
        _wait_text(driver, expected)
        _dismiss_banner(driver)
        _wait_text(driver, ["PGBM-002", "PGBM-003"])
        shot = tmp_path / "ohif_study_list.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _update_screenshot(shot, SCREENSHOT)
        # the hippocampus study in the viewer: the series browser holds the MR series and the stored SEG, which loads
        driver.get(f"{server['base']}/ohif/viewer?StudyInstanceUIDs={hippo_study}")
        page = _wait_text(driver, ["HippoCrop", f"monai_crossd {SEG} SEG"])
        assert "posterior" not in page, page[:2000]
        ActionChains(driver).double_click(driver.find_element(*_CY("study-browser-thumbnail-no-image"))).perform()
        _wait_text(driver, ["Do you want to open this Segmentation?"])
        driver.find_element("xpath", "//button[normalize-space(.)='Yes']").click()
        driver.find_element(*_CY("panelSegmentation-btn")).click()
        page = _wait_text(driver, ["Segmentations", "anterior", "posterior"], timeout=60)  # the SEG's segments
        viewport = driver.find_element(*_CY("viewport-pane"))
        ActionChains(driver).click(viewport).send_keys(*[Keys.ARROW_DOWN] * 16).perform()  # a slice with both parts
        _wait_text(driver, ["(17/32)"], timeout=20)
        deadline = time.monotonic() + 15  # let OHIF's notices (e.g. "DICOM SEG import ...") fade out
        while "DICOM SEG import" in driver.find_element("tag name", "body").text and time.monotonic() < deadline:
            time.sleep(0.5)
        driver.save_screenshot(str(tmp_path / "ohif_viewer_seg.png"))
        _update_screenshot(tmp_path / "ohif_viewer_seg.png", VIEWER_SCREENSHOT)
    finally:
        driver.quit()
