"""The package as users get it: the wheel ``python -m build`` makes installs in a fresh virtual environment, and the
commands, ``import hipnet``, the bundled model and the shipped manifests work from that install (not from this
checkout). The fresh environment takes the dependencies from this one (a path entry to its site-packages, after
its own), so the test needs no network; the wheel's declared requirements are checked against those versions."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, cwd=out)
    (path,) = out.glob("hipnet_toolkit-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed (no dependencies) and this environment's site-packages after its own."""
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


def _run(env: Path, *cmd: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=env, env=clean)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_the_wheel_holds_the_packages_the_manifests_and_the_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("hipnet/__init__.py", "hipnet/model/api.py", "hipnet/pipeline/readers/amass.py",
                 "hipnet/data_manifests/anny.yaml", "hipnet/model/pretrained/anny.pt", "hipnet/model/pretrained/anny.json"):
        assert want in names, want
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/"))]


def test_its_requirements_hold_in_the_tested_environment(wheel):
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    info = Parser().parsestr(zipfile.ZipFile(wheel).read(meta).decode())
    assert info["Requires-Python"] == ">=3.11"
    requirements = [Requirement(r) for r in info.get_all("Requires-Dist")]
    checked = 0
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra (dev) or another platform's
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req}: this environment has {version}"
        checked += 1
    assert checked >= 20


def test_commands_and_import_work_from_the_install(fresh):
    bin_ = fresh / "bin"
    assert "Generate the embedded dataset" in _run(fresh, str(bin_ / "hipnet-data"), "anny", "--help")
    assert "--shards" in _run(fresh, str(bin_ / "hipnet-train"), "--help")
    code = ("import hipnet, hipnet.model.api as api; from hipnet.pipeline.sources.manifest import manifest_path; "
            "m = hipnet.load('anny'); print(hipnet.__file__); print(api.__file__); print(manifest_path('anny')); "
            "print(len(m.subjects))")
    out = _run(fresh, str(bin_ / "python"), "-c", code).split()
    assert all(str(fresh) in line for line in out[:3]), out  # from the install, not from this checkout
    assert int(out[3]) >= 12
