"""Build the installable extension zip with Blender's own packer (``bl_pkg/cli/blender_ext.py``).

The packer ships inside the ``bpy`` wheel and is pure standard library, so the zip is built and validated
without a Blender executable. The zip holds the manifest and the add-on package at its root, ``shaders/`` inside.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def blender_ext_script() -> Path:
    import bpy

    scripts = Path(bpy.utils.resource_path("LOCAL")) / "scripts"
    script = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    if not script.is_file():
        raise FileNotFoundError(f"Blender's extension packer was not found at {script}")
    return script


def manifest_version(root: Path = REPO_ROOT) -> str:
    with open(root / "blender_manifest.toml", "rb") as f:
        return tomllib.load(f)["version"]


def build_extension(out_dir: Path, root: Path = REPO_ROOT) -> Path:
    """Stage manifest + add-on + shaders, run the packer's ``build`` and return the zip path."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"cinepregen-{manifest_version(root)}.zip"
    with tempfile.TemporaryDirectory(prefix="cinepregen-ext-") as tmp:
        stage = Path(tmp) / "cinepregen"
        shutil.copytree(root / "cinepregen_addon", stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(root / "shaders", stage / "shaders", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(root / "blender_manifest.toml", stage / "blender_manifest.toml")
        cmd = [sys.executable, str(blender_ext_script()), "build", "--source-dir", str(stage),
               "--output-filepath", str(zip_path)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"extension build failed:\n{result.stdout}\n{result.stderr}")
    return zip_path
