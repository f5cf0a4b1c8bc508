"""Blender-as-a-module and torch share one process: the backend depends on it."""

import numpy as np


def test_bpy_and_torch_in_one_process():
    import bpy
    import torch

    assert bpy.app.background
    assert bpy.app.version >= (4, 5, 0)
    assert np.__version__.startswith("1."), "bpy needs numpy < 2"

    bpy.ops.wm.read_homefile(use_empty=True)
    mesh = bpy.data.meshes.new("tri")
    mesh.from_pydata([(0, 0, 0), (2, 0, 0), (0, 3, 0)], [], [(0, 1, 2)])
    coords = np.zeros(9, dtype=np.float32)
    mesh.vertices.foreach_get("co", coords)
    verts = torch.from_numpy(coords).view(3, 3)
    edge_a, edge_b = verts[1] - verts[0], verts[2] - verts[0]
    area = torch.linalg.cross(edge_a, edge_b).norm() / 2
    assert area.item() == 3.0


def test_cli_version_and_help(capsys):
    from backend.cli import main

    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_extension_zip_builds_with_blenders_packer(tmp_path):
    import zipfile

    from backend.blender.extension import build_extension

    zip_path = build_extension(tmp_path)
    names = zipfile.ZipFile(zip_path).namelist()
    assert zip_path.name == "cinepregen-0.1.0.zip"
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert any(n.startswith("shaders/") for n in names)
