"""`genos export hf | import-hf`: bad input gives one `error:` line, exit 1, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_user_error, genos
from tests.tiny import make_checkpoint

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_00000007")


def test_missing_and_corrupt_checkpoints(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "hf"
    assert_user_error(genos("export", "hf", tmp_path / "nowhere", out), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(genos("export", "hf", tmp_path / "empty", out), "holds no genos checkpoint")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ckpt.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_user_error(genos("export", "hf", broken, out), "corrupt")
    assert not out.exists()


def test_existing_output_needs_overwrite(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert_user_error(genos("export", "hf", ckpt, out), "--overwrite")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    result = genos("export", "hf", ckpt, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and not (out / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temp or old copy left
    # The same for import-hf.
    back = tmp_path / "back"
    back.mkdir()
    (back / "x").write_text("x")
    assert_user_error(genos("export", "import-hf", out, back), "--overwrite")


def test_import_refuses_what_is_not_mixtral(tmp_path: Path) -> None:
    hf = tmp_path / "llama"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    assert_user_error(genos("export", "import-hf", hf, tmp_path / "out"), "not Mixtral")
    assert_user_error(
        genos("export", "import-hf", tmp_path / "none", tmp_path / "out"), "does not exist"
    )
    (tmp_path / "plain").mkdir()
    assert_user_error(genos("export", "import-hf", tmp_path / "plain", tmp_path / "out"),
                      "no config.json")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_import_refuses_weights_that_do_not_fit(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "hf"
    assert genos("export", "hf", ckpt, out).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    config["num_hidden_layers"] = 3  # the file holds 2
    (out / "config.json").write_text(json.dumps(config))
    assert_user_error(genos("export", "import-hf", out, tmp_path / "back"), "do not fit")
    assert not (tmp_path / "back").exists()


def test_without_transformers_says_how_to_install(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if absent
    assert_user_error(genos("export", "hf", ckpt, tmp_path / "hf"), "pip install 'genos[hf]'")


def test_help_lists_both_directions() -> None:
    result = genos("export", "--help")
    assert result.exit_code == 0
    assert "hf" in result.stdout and "import-hf" in result.stdout
