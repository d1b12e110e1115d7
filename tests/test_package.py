"""The installed distribution owns one import name, ``harx``, and nothing else top-level."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

FOREIGN_NAMES = ("cli", "extract", "features", "temporal")


def test_import_harx_gives_version_and_notebook_api(tmp_path):
    code = "import harx; print(harx.__version__); print(callable(harx.fit), callable(harx.run_extract))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    version, api = out.stdout.split("\n")[:2]
    assert version.count(".") == 2
    assert api == "True True"


def test_every_name_import_harx_offers_resolves():
    import harx

    for name in harx.__all__:
        assert getattr(harx, name) is not None, name


def test_plain_import_of_harx_does_not_load_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import sys, harx; print('torch' in sys.modules)"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_top_level_modules_besides_harx(tmp_path):
    """From outside the checkout, ``import features`` must not find harx's folder."""
    code = ("import importlib.util as u; "
            f"print([m for m in {FOREIGN_NAMES!r} if u.find_spec(m) is not None])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wheel_holds_only_the_harx_package(tmp_path):
    src = tmp_path / "src"       # a copy: setuptools writes build/ into the tree it builds
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "*.h5", "harx-out"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"could not build a wheel here: {built.stderr.strip().splitlines()[-1:]}")
    wheel = next((tmp_path / "dist").glob("harx-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == {"harx"}
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("harx/__init__.py", "harx/cli.py", "harx/__main__.py", "harx/extract/pipeline.py",
                   "harx/features/schema.py", "harx/temporal/run.py", "harx/extract/datasets/kth.py"):
        assert module in names
    assert not any(n.startswith("harx/tests/") for n in names)
