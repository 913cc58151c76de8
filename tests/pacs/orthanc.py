"""A real Orthanc PACS for the tests: its own configuration, storage and port, stopped at the end.

:class:`Orthanc` starts the ``Orthanc`` binary (Debian package ``orthanc``) with the DICOMweb plugin (package
``orthanc-dicomweb``) on a free HTTP port, with:

- HTTP only from this machine (``RemoteAccessAllowed`` false; Orthanc 1.10 has no bind-address option, so the port
  listens on all interfaces but answers local clients only), basic authentication on (one user),
- the DICOM protocol server off (no DICOM port), no Orthanc Explorer, WebDAV, Lua or saved jobs,
- storage and index in a folder of its own (a temporary folder), the log in ``<folder>/orthanc.log``,
- DICOMweb (QIDO-RS, WADO-RS, STOW-RS) at ``/dicom-web/``.

The process is started in its own session with a parent-death signal (Linux), so it stops with the test process even
when that one is killed; :meth:`Orthanc.stop` (or leaving the ``with`` block) terminates it and waits.

Example::

    with Orthanc(tmp_path) as pacs:
        pacs.upload(sorted(series_folder.glob("*.dcm")))
        client = pacs.dicomweb_client()
        client.search_for_studies()
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

try:
    import requests
except ImportError:  # the `dicom` extra brings it (a dependency of dicomweb-client)
    requests = None

__all__ = ["DICOMWEB_PLUGIN", "Orthanc", "OrthancError", "missing_orthanc"]

#: where the Debian package ``orthanc-dicomweb`` installs the plugin; ``ORTHANC_DICOMWEB_PLUGIN`` overrides it
DICOMWEB_PLUGIN = os.environ.get("ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: the Orthanc executable (Debian: ``/usr/sbin/Orthanc``); ``ORTHANC_BINARY`` overrides it
ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "Orthanc")


class OrthancError(RuntimeError):
    """Orthanc did not start, or refused an upload."""


def missing_orthanc() -> str | None:
    """Why Orthanc cannot run here (binary, DICOMweb plugin or ``requests`` missing), or ``None`` when it can."""
    if requests is None:
        return "the Python package `requests` is not installed (pip install -e '.[dicom]')"
    if shutil.which(ORTHANC_BINARY) is None:
        return f"Orthanc binary {ORTHANC_BINARY!r} not found on PATH (Debian: apt-get install orthanc)"
    if not Path(DICOMWEB_PLUGIN).is_file():
        return f"Orthanc DICOMweb plugin not found at {DICOMWEB_PLUGIN} (Debian: apt-get install orthanc-dicomweb)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM when the test process dies
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Orthanc:
    """An Orthanc server for one test session, on ``127.0.0.1:<free port>`` with basic authentication.

    Args:
        folder: a folder of its own for the configuration, storage, index and log (created).
        user: the registered user. Defaults to ``"crossd"``.
        password: its password. Defaults to ``"crossd-test"``.
        timeout: seconds to wait for Orthanc to answer after start. Defaults to 60.

    Attributes:
        url: ``http://127.0.0.1:<port>``; ``dicomweb_url``: ``<url>/dicom-web``; ``auth``: ``(user, password)``.
    """

    def __init__(self, folder: str | os.PathLike, user: str = "crossd", password: str = "crossd-test", timeout: float = 60.0):
        reason = missing_orthanc()
        if reason:
            raise OrthancError(reason)
        self.folder = Path(folder)
        self.auth = (user, password)
        self.timeout = timeout
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log(self) -> Path:
        return self.folder / "orthanc.log"

    def _config(self) -> dict:
        return {
            "Name": "monai_crossd-tests",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "TemporaryDirectory": str(self.folder / "tmp"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.auth[0]: self.auth[1]},
            "DicomServerEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpThreadsCount": 8,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "LuaScripts": [],
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado"},
        }

    def start(self) -> Orthanc:
        """Start Orthanc and wait until its REST API answers; tries three free ports.

        Raises:
            OrthancError: Orthanc exited or did not answer within ``timeout`` (the message holds its log's end).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = _free_port()
            config = self.folder / "orthanc.json"
            config.write_text(json.dumps(self._config(), indent=2))
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    [shutil.which(ORTHANC_BINARY), str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C of the tests reaches pytest, which stops Orthanc itself
                    preexec_fn=_die_with_parent,
                    cwd=self.folder,
                )
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if requests.get(f"{self.url}/system", auth=self.auth, timeout=2).status_code == 200:
                        return self
                except requests.RequestException:  # not listening yet
                    pass
                time.sleep(0.2)
            exited = self.process.poll() is not None
            self.stop()
            if not exited or attempt == 2:  # a port taken meanwhile makes Orthanc exit: retry with another one
                break
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise OrthancError(f"Orthanc did not start on port {self.port} (config {self.folder / 'orthanc.json'}); log:\n{tail}")

    def stop(self) -> None:
        """Terminate Orthanc (SIGTERM, then SIGKILL after 20 s) and wait for it; does nothing when it is not running."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def upload(self, paths: Iterable[str | os.PathLike]) -> list[dict]:
        """Store DICOM files through the REST API (``POST /instances``).

        Returns:
            Orthanc's answer per file (``{"ID", "ParentSeries", "ParentStudy", "Status", ...}``).

        Raises:
            OrthancError: a file is refused (the message names it and Orthanc's answer).
        """
        answers = []
        with requests.Session() as session:
            session.auth = self.auth
            for path in paths:
                response = session.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=60)
                if response.status_code != 200:
                    raise OrthancError(f"Orthanc refused {str(path)!r}: HTTP {response.status_code} {response.text[:500]}")
                answers.append(response.json())
        return answers

    def dicomweb_client(self):
        """A :class:`dicomweb_client.DICOMwebClient` on :attr:`dicomweb_url` with basic authentication."""
        from dicomweb_client import DICOMwebClient
        from dicomweb_client.session_utils import create_session_from_user_pass

        session = create_session_from_user_pass(username=self.auth[0], password=self.auth[1])
        return DICOMwebClient(url=self.dicomweb_url, session=session)
