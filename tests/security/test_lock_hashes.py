"""Dependencies are verified: requirements.lock carries the sha256 of every pin, and every install
from it (``make setup``, the Airflow image, the serving image's wheels) refuses a file that differs.

The install tests run the real commands against a scratch venv and a two-entry lock, so they take
seconds: the Makefile's own ``uv pip sync`` line (printed by ``make -n``), and
``docker_target.prepare_wheels`` with a wheel cache holding a tampered file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline_tasks.core import lockfile
from pipeline_tasks.core.config import load_config
from pipeline_tasks.deploy import docker_image as dt

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _entries(text: str) -> dict[str, list[str]]:
    """``name==version`` -> its ``--hash`` options, continuation lines joined (independent of the
    parser under test)."""
    entries: dict[str, list[str]] = {}
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pin = line.split()[0]
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[^\s;\\]+", pin), line[:120]
        entries[pin] = HASH.findall(line)
    return entries


def _entry_text(pin: str) -> str:
    """The lock's text of one entry (pin line and its hash lines)."""
    lines = LOCK.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{pin} "))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.lstrip().startswith("--hash="):
            break
        block.append(line)
    return "\n".join(block) + "\n"


def test_every_pin_of_the_lock_has_a_sha256_hash():
    entries = _entries(LOCK.read_text())
    assert len(entries) > 200
    unhashed = [pin for pin, hashes in entries.items() if not hashes]
    assert not unhashed, f"pins without --hash in requirements.lock: {unhashed[:10]}"
    # the lock says how it was made, and `make lock` makes it the same way
    header = LOCK.read_text().splitlines()[1]
    assert "--generate-hashes" in header, header
    recipe = subprocess.run(["make", "-n", "-B", "lock"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    assert "pip compile pyproject.toml" in recipe and "--generate-hashes" in recipe, recipe
    # the image builds' parser reads the same pins, each with its hashes
    assert lockfile.lock_pins() == list(entries)
    locked = lockfile.read_lock()
    assert {entry.pin: [f"--hash={h}" for h in entry.hashes]
            for entry in locked.values()} == entries


def test_the_lock_parser_names_the_file_and_line_of_an_unhashed_pin(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(_entry_text("six==1.17.0") + "    # via x\nzipp==4.1.2\n    # via y\n")
    with pytest.raises(Exception, match=r"requirements\.lock:5: zipp==4\.1\.2 has no --hash"):
        lockfile.lock_pins(lock)


def _make_commands(workdir: Path, venv: Path) -> list[str]:
    """The recipe of ``make setup`` as make would run it, one shell command per entry."""
    done = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "-n", "-B", "setup",
                           f"VENV={venv}"], cwd=workdir, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    return [cmd.strip() for cmd in re.sub(r"\\\n\s*", " ", out).splitlines() if cmd.strip()]


@pytest.fixture
def scratch(tmp_path):
    """A directory make runs the Makefile in (its own requirements.lock) and an empty venv with
    this environment's uv (the one `make setup` installed)."""
    work = tmp_path / "work"
    work.mkdir()
    for prerequisite in ("pyproject.toml", "Makefile", "requirements.lock"):
        (work / prerequisite).write_text("")  # the stamp's prerequisites, as make looks them up
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "bin" / "uv").symlink_to(Path(sys.executable).parent / "uv")
    return work, venv


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=300)


def test_make_setup_installs_only_files_that_match_the_lock(scratch):
    work, venv = scratch
    commands = _make_commands(work, venv)
    [sync] = [cmd for cmd in commands if " pip sync " in cmd]
    [bootstrap] = [cmd for cmd in commands if " -m pip install " in cmd]
    assert "--require-hashes" in bootstrap and "requirements.lock" in bootstrap, bootstrap
    site = next((venv / "lib").glob("python3*/site-packages"))
    good = _entry_text("six==1.17.0")
    # a digit changed in every hash of the entry: the file uv gets matches none of them
    altered = re.sub(r"sha256:([0-9a-f])",
                     lambda m: "sha256:" + ("1" if m.group(1) == "0" else "0"), good)
    lock = work / "requirements.lock"

    lock.write_text(altered)
    refused = _run(sync, work)
    assert refused.returncode != 0 and "hash" in refused.stderr.lower(), refused.stderr[-1500:]
    assert not (site / "six.py").exists()

    lock.write_text("six==1.17.0\n")  # no hash at all: an error, not an unchecked install
    refused = _run(sync, work)
    assert refused.returncode != 0 and "hash" in refused.stderr.lower(), refused.stderr[-1500:]
    assert not (site / "six.py").exists()

    lock.write_text(good)
    done = _run(sync, work)
    assert done.returncode == 0, done.stderr[-1500:]
    assert (site / "six.py").exists()


def _tamper(wheel: Path) -> None:
    """Rewrite ``wheel`` as a valid wheel with one module changed (what an attacker would ship)."""
    with zipfile.ZipFile(wheel) as zf:
        files = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(wheel, "w") as zf:
        for info, data in files:
            if info.filename == "six.py":
                data += b"\nimport os  # injected\n"
            zf.writestr(info, data)


def test_prepare_wheels_refuses_a_cached_wheel_that_differs_from_the_lock(tmp_path):
    config = load_config()
    cache = tmp_path / "cache"
    first = tmp_path / "first" / "wheels"
    names = dt.prepare_wheels(config, first, pins=["six==1.17.0"], cache=cache)
    assert names == ["six-1.17.0-py2.py3-none-any.whl"]
    # what the image installs (--require-hashes) is the lock's entry, hashes included
    assert (first / "requirements.txt").read_text() == _entry_text("six==1.17.0")
    cached = cache / names[0]
    assert cached.exists()

    _tamper(cached)
    second = tmp_path / "second" / "wheels"
    with pytest.raises(dt.DockerTargetError, match=re.escape(str(cached)) + r".*not one of "
                       r"requirements\.lock's hashes for six==1\.17\.0"):
        dt.prepare_wheels(config, second, pins=["six==1.17.0"], cache=cache)
    assert not list(second.glob("*.whl"))

    # deleting the bad file (what the error advises) fetches it anew
    cached.unlink()
    assert dt.prepare_wheels(config, second, pins=["six==1.17.0"], cache=cache) == names
    # and the check prepare_wheels applies to every wheel it puts into dest refuses a swap
    swapped = tmp_path / "swapped" / cached.name
    swapped.parent.mkdir()
    shutil.copy(cached, swapped)
    dt.check_wheel(swapped, lockfile.read_lock())  # the genuine file passes
    _tamper(swapped)
    with pytest.raises(dt.DockerTargetError, match="not one of requirements.lock's hashes"):
        dt.check_wheel(swapped, lockfile.read_lock())


def test_the_image_builds_install_with_require_hashes():
    """The Dockerfiles' install commands (the build itself runs in
    tests/integration/test_compose.py and tests/pipeline_tasks/deploy/test_docker_target.py)."""
    airflow = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    run = re.sub(r"\\\n\s*", " ", airflow)
    pip_uv = re.search(r"venv/bin/pip install [^&]*", run).group(0)
    uv = re.search(r"uv pip install [^&]*", run).group(0)
    assert "--require-hashes" in pip_uv and "--require-hashes" in uv, (pip_uv, uv)
    serving = re.sub(r"\\\n\s*", " ", (ROOT / "docker" / "serving.Dockerfile").read_text())
    wheels = re.search(r"pip install [^&]*requirements\.txt", serving).group(0)
    assert "--require-hashes" in wheels, wheels
