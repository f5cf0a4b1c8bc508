"""The command line's answers to mistakes: one line naming the problem, no traceback, a non-zero exit, and nothing
loaded (no model, no Hub) before the mistake is found. Real processes of ``python -m backend.cli``."""

import subprocess
import sys
from pathlib import Path


def test_cli_mistakes_are_one_line_without_traceback(tmp_path):
    not_blend = tmp_path / "scene.blend"
    not_blend.write_text("hello")
    cases = [
        (["render-passes", str(not_blend), "--all", "--out", str(tmp_path / "o")], "is not a .blend file"),
        (["render", str(not_blend), "--out", str(tmp_path / "o")], "is not a .blend file"),
        (["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")], "no train shots"),
        (["render-passes", str(tmp_path / "nothing.blend"), "--all", "--out", str(tmp_path / "o")],
         "does not exist"),
    ]
    for argv, words in cases:
        result = subprocess.run([sys.executable, "-m", "backend.cli", *argv], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode != 0, argv
        assert "Traceback" not in result.stderr and words in result.stderr, (argv, result.stderr[-2000:])


def test_generate_mistakes_are_one_line_and_load_no_model(tmp_path):
    """Each answered before any model is loaded (or, for another model's folder, without reaching the Hub)."""
    from test_pipeline import synthetic_bundle

    from cinepregen_addon.core.shot_bundle import write_bundle

    bundle = write_bundle(synthetic_bundle(), tmp_path / "bundle")
    other = tmp_path / "other_model" / "transformer"
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"_class_name": "DiTTransformer2DModel", "num_layers": 1}')
    cases = [
        (["generate", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "no shot bundle at"),
        (["generate", str(bundle), "--out", str(tmp_path / "o"), "--steps", "0"], "--steps must be at least 1"),
        (["generate", str(bundle), "--out", str(tmp_path / "o"), "--device", "cuda"], "no usable CUDA device"),
        (["generate", str(bundle), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "other_model")],
         "holds a DiTTransformer2DModel model"),
        (["serve", "--weights", str(tmp_path / "nowhere"), "--port", "0", "--data", str(tmp_path / "d")],
         "no model folder at"),
    ]
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "0", "CUDA_VISIBLE_DEVICES": ""}
    for argv, words in cases:
        result = subprocess.run([sys.executable, "-m", "backend.cli", *argv], capture_output=True, text=True,
                                timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and words in result.stderr, (argv, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # the message (and a closed bar)
