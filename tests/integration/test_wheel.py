"""A wheel built from the tree installs into a fresh venv and serves, with its package data.

The wheel is built as users build it (``pip wheel``, isolated build backend). The fresh venv
borrows the project venv's installed dependencies through a ``.pth`` line (not proxygate itself:
the editable install's own ``.pth`` hook is not run for a directory added that way), so the test
needs no index and stays well under a minute.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import orjson
import pytest

from proxygate import __version__

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DATA = (
    "proxygate/prices/prices.toml",
    "proxygate/server/static/dashboard.css",
    "proxygate/server/static/dashboard.js",
)


def tree_copy(dest: Path) -> Path:
    """The files git would ship (tracked and new, not ignored): no .venv, build/ or caches."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    src = dest / "src"
    for name in filter(None, listed):
        path = ROOT / name.decode()
        if path.is_file():
            (src / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name.decode())
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the tree's files")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tree_copy(tmp)
    dist = tmp / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = dist.glob("proxygate-*.whl")
    return built


def test_the_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    assert not any(name.startswith(("tests/", "bench/", "pool/")) for name in names)
    assert f"proxygate-{__version__}.dist-info/entry_points.txt" in names


def test_the_wheel_installs_in_a_fresh_venv_and_serves(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    proxygate = venv / "bin" / "proxygate"
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PROXYGATE_ADDR": "127.0.0.1:0"}

    def in_home(*command: str | Path) -> str:
        """What the command prints, run as the user would: in the fake HOME with only its environment."""
        return subprocess.run(
            [str(part) for part in command],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    where = in_home(
        python,
        "-c",
        "import importlib.resources as r, proxygate; print(proxygate.__file__); "
        "print(r.files('proxygate.prices').joinpath('prices.toml').is_file()); "
        "print(r.files('proxygate.server').joinpath('static/dashboard.js').is_file())",
    ).split()
    assert where == [str(site / "proxygate" / "__init__.py"), "True", "True"]  # not the checkout's
    assert in_home(proxygate, "--version") == f"proxygate {__version__}\n"

    server = subprocess.Popen(
        [str(proxygate), "serve"],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        runfile = home / ".proxygate" / "data" / "server.json"
        deadline = time.monotonic() + 30
        while not runfile.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runfile.exists(), server.stderr.read() if server.poll() is not None else "no server.json"
        addr = orjson.loads(runfile.read_bytes())["addr"]
        with urllib.request.urlopen(f"http://{addr}/healthz", timeout=10) as resp:
            assert resp.status == 200
            assert orjson.loads(resp.read()) == {"ok": True, "pid": server.pid}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode == 0
