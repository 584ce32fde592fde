"""The container image: the Dockerfile built with buildah, started, and used for real.

Without a Docker daemon or a registry of base images, the base is made here: debootstrap
writes a minimal Debian bookworm with python3 and python3-venv, imported as
localhost/debian-python:bookworm (kept between runs: it is the same every time). The project's
Dockerfile is built on it with `buildah bud --isolation chroot`, with the machine's certificate
bundle and global pip configuration mounted read-only so pip reaches the package index (the
Dockerfile itself assumes nothing of this machine). The image's own command is started with
`buildah run` on a free port, then checked: the health endpoint, the Streamlit page, the
image's HEALTHCHECK, a non-root server process, the Home page's text in headless Chromium,
and `python -m core inspect` on a mounted dataset; with the real assets, a weights file copied
into the volume (the README's recipe) trains a model offline. The images and containers made
here are removed afterwards. Skipped, saying why, when not root or when buildah, podman or
debootstrap is missing (on Debian: apt-get install buildah podman debootstrap).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ASSETS, MOBILENET_V2_NO_TOP, make_class_folders
from PIL import Image
from studio_server import CHROMEDRIVER, CHROMIUM

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "container"
BASE_IMAGE = "localhost/debian-python:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Read-only mounts for the build only: how this machine reaches the package index.
BUILD_MOUNTS = ("/etc/ssl/certs", "/etc/pip.conf", "/etc/xdg/pip")
BUILD_SECONDS = 900
SERVER_START_SECONDS = 120
HOME_PAGE_SECONDS = 120
EXPECTED_CMD = ["streamlit", "run", "streamlit_app.py", "--server.address", "0.0.0.0"]


def _missing() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "building images with buildah --isolation chroot needs root"
    for tool in ("buildah", "podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install buildah podman debootstrap)"
    return None


def _run(args: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    """Runs a command, output captured as text; fails the test with the output on error."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _image_exists(name: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", name],
                          capture_output=True).returncode == 0


def _remove_images(*names: str) -> None:
    """Removes the images (and their untagged layers no other image uses), best effort."""
    for name in names:
        subprocess.run(["buildah", "rmi", "--force", name], capture_output=True, timeout=300)


def debian_mirror() -> str:
    """The Debian mirror of this machine's apt sources serving bookworm, or deb.debian.org."""
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if path.suffix not in {".list", ".sources"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".list":
            for line in text.splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
                if match:
                    return match.group(1)
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, flags=re.M))
            if "deb" in fields.get("Types", "").split() and \
                    "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return DEFAULT_MIRROR


def ensure_base_image() -> None:
    """localhost/debian-python:bookworm from debootstrap, unless an earlier run made it."""
    if _image_exists(BASE_IMAGE):
        return
    with tempfile.TemporaryDirectory(prefix="tl-debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
              "bookworm", str(rootfs), debian_mirror()], timeout=600)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, timeout=300)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)


def build(context: Path, tag: str, log: Path) -> str:
    """`buildah bud` of the project's Dockerfile on the local base; returns the build output."""
    mounts = [arg for path in BUILD_MOUNTS if Path(path).exists()
              for arg in ("-v", f"{path}:{path}:ro")]
    args = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers",
            "--format", "docker", *mounts, "--build-arg", f"BASE={BASE_IMAGE}",
            "-f", str(context / "Dockerfile"), "-t", tag, str(context)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=BUILD_SECONDS)
    output = result.stdout + result.stderr
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(output)
    if result.returncode != 0:
        pytest.fail(f"the image did not build (exit {result.returncode}):\n{output[-4000:]}")
    return output


def image_config(tag: str) -> dict:
    """The image's Docker-format config (Cmd, User, Env, Healthcheck...)."""
    info = json.loads(_run(["buildah", "inspect", "--type", "image", tag]).stdout)
    return info["Docker"]["config"]


@dataclass(frozen=True)
class BuiltImage:
    """A built image: its tag and its config."""

    tag: str
    config: dict


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    """The project's image, built once for this module; removed afterwards."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    ensure_base_image()
    tag = f"localhost/tl-studio-test:{uuid.uuid4().hex[:10]}"
    try:
        build(REPO, tag, ARTIFACTS / "build.log")
        yield BuiltImage(tag, image_config(tag))
    finally:
        _remove_images(tag)


@contextlib.contextmanager
def container(image: BuiltImage) -> Iterator[str]:
    """A working container of the image (`buildah from`), removed afterwards."""
    name = f"tl-studio-test-{uuid.uuid4().hex[:10]}"
    _run(["buildah", "from", "--name", name, image.tag])
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)


def buildah_run(name: str, command: list[str], *, volumes: tuple[str, ...] = (),
                env: dict[str, str] | None = None) -> list[str]:
    """The `buildah run` command line running command in container name."""
    args = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    for volume in volumes:
        args += ["-v", volume]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    return [*args, name, "--", *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Process ids below pid (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass(frozen=True)
class Server:
    """The image's command running in a container on the host network."""

    url: str
    port: int
    container: str
    process: subprocess.Popen


@pytest.fixture(scope="module")
def server(image: BuiltImage) -> Iterator[Server]:
    """The image's own command (its CMD) on a free port, given as Streamlit's port variable."""
    port = free_port()
    log = ARTIFACTS / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with container(image) as name, log.open("wb") as out:
        process = subprocess.Popen(
            buildah_run(name, image.config["Cmd"], env={"STREAMLIT_SERVER_PORT": str(port)}),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while not _answers_ok(f"{url}/_stcore/health"):
                if process.poll() is not None:
                    pytest.fail(f"the container's server exited with {process.returncode}:\n"
                                f"{log.read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer from {url}/_stcore/health in "
                                f"{SERVER_START_SECONDS} s:\n{log.read_text(errors='replace')}")
                time.sleep(0.5)
            yield Server(url, port, name, process)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _answers_ok(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=3) as reply:
            return reply.status == 200 and reply.read().strip() == b"ok"
    return False


def test_image_runs_the_studio_as_a_non_root_user_with_its_state_on_a_volume(
    image: BuiltImage,
) -> None:
    config = image.config
    assert config["Cmd"] == EXPECTED_CMD
    assert config["User"] not in ("", "root", "0", "0:0")
    assert "8501/tcp" in config["ExposedPorts"]
    assert "/data" in config["Volumes"]
    assert config["WorkingDir"] == "/app"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TL_STUDIO_HOME"] == "/data"
    assert env["KERAS_HOME"].startswith("/data/")
    assert "/_stcore/health" in " ".join(config["Healthcheck"]["Test"])


def test_code_change_rebuild_reuses_the_installed_requirements(
    image: BuiltImage, tmp_path: Path,
) -> None:
    context = tmp_path / "context"
    shutil.copytree(REPO, context, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "test-artifacts", ".pytest_cache", ".ruff_cache",
        ".tl-studio"))
    with (context / "streamlit_app.py").open("a") as script:
        script.write("# a code change\n")
    tag = f"{image.tag}-changed"
    try:
        output = build(context, tag, ARTIFACTS / "rebuild.log")
        steps = re.split(r"^STEP \d+/\d+: ", output, flags=re.M)
        pip_step = next(step for step in steps if "pip" in step.split("\n", 1)[0]
                        and "install" in step.split("\n", 1)[0])
        copy_step = next(step for step in steps if step.startswith("COPY . "))
        assert "Using cache" in pip_step, pip_step[-2000:]
        assert "Using cache" not in copy_step, "the changed code was not copied in again"
        assert "Collecting tensorflow" not in output and "Downloading tensorflow" not in output
    finally:
        _remove_images(tag)


def test_container_serves_the_app_and_passes_its_healthcheck(
    image: BuiltImage, server: Server,
) -> None:
    with urllib.request.urlopen(f"{server.url}/", timeout=10) as reply:
        page = reply.read().decode()
    assert "<title>Streamlit</title>" in page and '<div id="root">' in page
    healthcheck = image.config["Healthcheck"]["Test"]
    assert healthcheck[0] in ("CMD", "CMD-SHELL")
    command = healthcheck[1:] if healthcheck[0] == "CMD" else ["sh", "-c", healthcheck[1]]
    result = subprocess.run(
        buildah_run(server.container, command, env={"STREAMLIT_SERVER_PORT": str(server.port)}),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    users = {
        (Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0],
         Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        for pid in _descendants(server.process.pid)
        if Path(f"/proc/{pid}/cmdline").exists()
    }
    streamlit_users = {uid for uid, cmdline in users if "streamlit run" in cmdline}
    assert streamlit_users and "0" not in streamlit_users, users


def test_container_home_page_shows_the_studio_in_a_browser(server: Server) -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.skip(f"{path} is missing (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--window-size=1400,1000"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="tl-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    text = ""
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url)
        deadline = time.monotonic() + HOME_PAGE_SECONDS
        while not ("Recent runs" in text and "Compute device" in text) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(Exception):
                text = driver.find_element(By.CSS_SELECTOR, "[data-testid='stMain']").text
        # The compute device is in a closed fold for admins (everyone, with no password
        # set): its text is in the page, not shown.
        folded = driver.execute_script(
            "return document.querySelector(\"[data-testid='stMain']\").textContent") or ""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "home.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert "Transfer Learning Studio" in text, text
    assert "Where to start" in text and "Recent runs" in text, text
    assert "Compute device" in text and "TensorFlow 2.21" in folded, folded


def test_inspect_runs_inside_the_container_on_a_mounted_dataset(
    image: BuiltImage, tmp_path: Path,
) -> None:
    dataset = make_class_folders(tmp_path / "ds", {"cats": 4, "dogs": 3})
    (dataset / "dogs" / "broken.jpg").write_bytes(b"not a picture")
    Image.new("RGB", (8, 8), "red").save(dataset / "cats" / "tiny.png")
    for folder in (dataset, *dataset.iterdir()):
        folder.chmod(0o755)
    with container(image) as name:
        result = subprocess.run(
            buildah_run(name, ["python", "-m", "core", "inspect", "/data/ds", "--json"],
                        volumes=(f"{dataset}:/data/ds:ro",)),
            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["root"] == "/data/ds"
    assert report["classes"] == {"cats": 4, "dogs": 3}
    assert report["usable"] is True
    assert {Path(item["file"]).name for item in report["rejected"]} == {"broken.jpg", "tiny.png"}


@pytest.mark.real
def test_offline_weights_copied_into_the_volume_train_a_model(
    image: BuiltImage, tmp_path: Path,
) -> None:
    weights = ASSETS / "weights" / MOBILENET_V2_NO_TOP
    if not weights.is_file():
        pytest.skip(f"{weights} is missing (the real assets, see tests/conftest.py)")
    dataset = make_class_folders(tmp_path / "ds", {"cats": 6, "dogs": 6})
    for folder in (dataset, *dataset.iterdir()):
        folder.chmod(0o755)
    with container(image) as name:
        # The README's recipe: copy the file into $KERAS_HOME/models on the volume.
        _run(buildah_run(name, ["cp", f"/weights/{weights.name}", "/data/keras/models/"],
                         volumes=(f"{weights.parent}:/weights:ro",)))
        result = subprocess.run(
            buildah_run(name, ["python", "-m", "core", "train", "/data/ds", "--backbone",
                               "mobilenet_v2", "--weights", "imagenet", "--epochs", "1",
                               "--fine-tune-layers", "0", "--json"],
                        volumes=(f"{dataset}:/data/ds:ro",), env={"TL_STUDIO_OFFLINE": "1"}),
            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["status"] == "completed"
    assert run["run_dir"].startswith("/data/runs/")
