"""The zoo's registry: one folder per shipped model (model.json, recipe.py, weights/), discovered, packaged,
trained through one dispatch into ./NAME by default."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from accel.errors import AccelError
from accel.training import read_train_config
from accel.zoo import MODELS, load
from accel.zoo._registry import ZOO, discover

ROOT = Path(__file__).resolve().parents[2]


def test_every_model_folder_is_discovered_with_its_weights_and_recipe():
    folders = sorted(d.name for d in ZOO.iterdir() if (d / "model.json").is_file())
    assert folders == sorted(i.folder.name for i in MODELS.values()) and len(folders) >= 3
    for name, info in MODELS.items():
        assert info.folder.name == name.replace("-", "_") and callable(info.entry(info.train)) and info.default_steps > 0, name
    assert {"dit-digits", "unet-natural", "flux-shapes"} <= set(_with_weights())
    for name in set(MODELS) - set(_with_weights()):  # a recipe whose weights are not in this release
        with pytest.raises(AccelError, match=f"weights for '{name}' are missing .*accel zoo train {name}"):
            load(name)


def _with_weights() -> dict:
    return {n: i for n, i in MODELS.items() if (i.weights / "model_index.json").is_file()}


def test_shipped_train_config_is_the_recipes_default():
    """Each recipe's defaults reproduce its shipped weights: the recorded settings (flux-shapes' restarts in
    the older positional form) read back into a config equal to the default one."""
    for name, info in _with_weights().items():
        cls = info.entry(info.config)
        assert read_train_config(cls, info.weights / "train_config.json") == cls(), name


def test_pyproject_packages_every_model_folder_and_its_weights():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setup["package-data"]["accel.zoo"]
    for info in MODELS.values():
        assert f"accel.zoo.{info.folder.name}" in setup["packages"], info.name
        files = [p for p in info.folder.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")]
        for f in files:
            rel = f.relative_to(ZOO).as_posix()
            assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel


def test_a_new_model_is_one_folder(tmp_path):
    spec = {"name": "toy-model", "description": "a toy", "default_steps": 7, "default_guidance": 1.5,
            "train": "recipe:train", "config": "recipe:TrainConfig"}
    (tmp_path / "toy_model").mkdir()
    (tmp_path / "toy_model" / "model.json").write_text(json.dumps(spec))
    (tmp_path / "not_a_model").mkdir()
    found = discover(tmp_path)
    assert list(found) == ["toy-model"] and found["toy-model"].default_steps == 7
    (tmp_path / "toy_model" / "model.json").write_text(json.dumps(spec | {"name": "other-name"}))
    with pytest.raises(AccelError, match="folder must then be 'other_name'"):
        discover(tmp_path)
    (tmp_path / "toy_model" / "model.json").write_text(json.dumps(spec | {"default_steps": "many", "colour": 1}))
    with pytest.raises(AccelError, match="colour, default_steps|default_steps.*colour"):
        discover(tmp_path)


def test_zoo_does_not_import_idm_code():
    code = ("import sys, accel.zoo.dit_digits.recipe, accel.zoo.flux_shapes.recipe, accel.zoo.unet_natural.recipe; "
            "print([m for m in sys.modules if m.startswith('accel.invertible')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["[]"], r.stdout + r.stderr[-2000:]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_zoo_train_writes_to_the_working_directory_by_default(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from accel.cli.main import app

    shipped = _digest(MODELS["dit-digits"].weights)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["zoo", "train", "dit-digits", "--steps", "2"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "dit-digits"
    assert (out / "model_index.json").is_file() and (out / ".train" / "checkpoint.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["steps"] == 2
    assert type(load(str(out))).__name__ == "ClassConditionalPipeline"
    assert _digest(MODELS["dit-digits"].weights) == shipped  # the package's weights are untouched
    r = CliRunner().invoke(app, ["zoo", "train", "no-such-model"])
    assert r.exit_code != 0 and "trainable models" in str(r.exception or r.output)
