"""Model folders from elsewhere, damaged or edited: each is refused before its weights are read, in one line that names
the file, by the loader, by the server's model list and by `cinepregen generate` (exit 2, no traceback); the
shipped folders, and the same weights stored in another float type, still load."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.cli import main as cli_main
from backend.pipelines.previs_pipeline import PrevisPipeline
from backend.server.catalogue import describe_model

SHIPPED = Path(__file__).resolve().parents[1] / "backend" / "weights"
DENSE = "transformer/diffusion_pytorch_model.safetensors"
PACKED = "transformer/quantized_model.safetensors"


def _edit_tensors(folder: Path, file: str, edit) -> None:
    tensors = load_file(str(folder / file))
    edit(tensors)
    save_file(tensors, str(folder / file))


def _edit_json(folder: Path, file: str, edit) -> None:
    config = json.loads((folder / file).read_text())
    edit(config)
    (folder / file).write_text(json.dumps(config))


def _first_layer(config: dict) -> dict:
    return next(iter(config["layers"].values()))


DAMAGE = {  # case -> (shipped folder, damage(folder), words in the one-line error)
    "a tensor missing": ("previs-tiny", lambda f: _edit_tensors(f, DENSE, lambda t: t.pop(sorted(t)[0])),
                         "tensors missing"),
    "an unknown tensor": ("previs-tiny", lambda f: _edit_tensors(
        f, DENSE, lambda t: t.update({"blocks.0.extra.weight": torch.zeros(3)})), "unknown tensors"),
    "a tensor of another shape": ("previs-tiny", lambda f: _edit_tensors(
        f, DENSE, lambda t: t.update({k: t[k][:-1] for k in [sorted(t)[3]]})), "the config makes it"),
    "no blocks in the config": ("previs-tiny", lambda f: _edit_json(f, "transformer/config.json",
                                                                    lambda c: c.update(depth=0)), "unknown tensors"),
    "a hidden size of 10^9": ("previs-tiny", lambda f: _edit_json(
        f, "transformer/config.json", lambda c: c.update(hidden_size=10**9)), "hidden_size = 1,000,000,000"),
    "a depth of 10^7": ("previs-tiny", lambda f: _edit_json(f, "transformer/config.json",
                                                            lambda c: c.update(depth=10**7)), "depth = 10,000,000"),
    "a size given as text": ("previs-tiny", lambda f: _edit_json(
        f, "transformer/config.json", lambda c: c.update(hidden_size="128")), "does not describe a PrevisDiT"),
    "a refiner width of 10^6": ("previs-tiny", lambda f: _edit_json(
        f, "refiner/config.json", lambda c: c.update(width=10**6)), "width = 1,000,000"),
    "truncated weights": ("previs-tiny", lambda f: (f / DENSE).write_bytes((f / DENSE).read_bytes()[:5000]),
                          "is damaged"),
    "pickled weights only": ("previs-tiny", lambda f: (torch.save(load_file(str(f / DENSE)), f / (
        "transformer/diffusion_pytorch_model.bin")), (f / DENSE).unlink()), "never loads"),
    "NaN weights": ("previs-tiny", lambda f: _edit_tensors(
        f, DENSE, lambda t: t.update({k: torch.full_like(t[k], float("nan")) for k in [sorted(t)[0]]})),
        "holds NaN or infinite values"),
    "no reference encoder": ("previs-tiny", lambda f: shutil.rmtree(f / "reference_encoder"),
                             "no reference_encoder/config.json"),
    "a quantized layer the model lacks": ("previs-tiny-vq3", lambda f: _edit_json(
        f, "transformer/quantization_config.json",
        lambda c: c["layers"].update({"blocks.0.no_such_layer": _first_layer(c)})), "the model has no layer"),
    "a quantized layer of 10^6 x 10^6": ("previs-tiny-vq3", lambda f: _edit_json(
        f, "transformer/quantization_config.json",
        lambda c: _first_layer(c).update(in_features=10**6, out_features=10**6)), "not a linear layer of that size"),
    "a codebook of 2^40": ("previs-tiny-vq3", lambda f: _edit_json(
        f, "transformer/quantization_config.json", lambda c: _first_layer(c).update(k=2**40)), "out of range"),
    "no layers": ("previs-tiny-vq3", lambda f: _edit_json(f, "transformer/quantization_config.json",
                                                          lambda c: c.pop("layers")), "'layers' must map"),
    "a shared codebook that is not there": ("previs-tiny-vq3", lambda f: _edit_json(
        f, "transformer/quantization_config.json", lambda c: _first_layer(c).update(codebook="blocks.9.nothing")),
        "shares the codebook"),
    "short packed codes": ("previs-tiny-vq3", lambda f: _edit_tensors(
        f, PACKED, lambda t: t.update({k: t[k][:100] for k in [next(k for k in sorted(t) if k.endswith(".codes"))]})),
        "the config makes it"),
    "bits that the layers do not store": ("previs-tiny-vq3", lambda f: _edit_json(
        f, "transformer/quantization_config.json", lambda c: c.update(bits=2)), "bits says 2, but its layers store 3"),
    "truncated packed weights": ("previs-tiny-vq3", lambda f: (f / PACKED).write_bytes(
        (f / PACKED).read_bytes()[:3000]), "is damaged"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_model_folder_is_refused_in_one_line_naming_the_problem(tmp_path, case):
    shipped, damage, words = DAMAGE[case]
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED / shipped, folder)
    damage(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(words)) as error:
        PrevisPipeline.from_pretrained(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder) in message
    if case not in ("NaN weights", "a quantized layer the model lacks", "a quantized layer of 10^6 x 10^6",
                    "a codebook of 2^40", "no layers", "a shared codebook that is not there", "short packed codes",
                    "bits that the layers do not store"):
        assert words in describe_model("model", folder)["error"]  # the server lists it with its reason at start


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_a_command_on_a_damaged_folder_exits_2_with_one_line(tmp_path, capsys, command):
    from test_server import bundle_folder

    folder = tmp_path / "model"
    shutil.copytree(SHIPPED / "previs-tiny", folder)
    _edit_json(folder, "transformer/config.json", lambda c: c.update(hidden_size=10**9))
    bundle, out = str(bundle_folder(tmp_path)), str(tmp_path / "out")
    arguments = {"generate": [bundle, "--out", out], "eval": ["--bundles", bundle, "--out", out]}[command]
    code = cli_main([command, *arguments, "--weights", str(folder), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "hidden_size = 1,000,000,000" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_weights_stored_in_half_precision_still_load_and_give_the_same_model(tmp_path):
    folder = tmp_path / "half"
    shutil.copytree(SHIPPED / "previs-tiny", folder)
    _edit_tensors(folder, DENSE, lambda t: t.update({k: v.half() for k, v in t.items()}))
    loaded = PrevisPipeline.from_pretrained(folder).transformer.state_dict()
    original = load_file(str(SHIPPED / "previs-tiny" / DENSE))
    assert all(torch.equal(loaded[k], original[k].half().float()) for k in original)
