"""Output locations that cannot be written: every command refuses them while reading its options
(exit 2, a message naming the path), before it loads a model or renders anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.commands.main import main
from benchmark.commands.options import writable_file, writable_folder

# Each command with its output folder inside a file, `FILE` standing for that file.
FOLDER_INSIDE_A_FILE = {
    "synth": ["synth", "FILE/x", "--preset", "tiny"],
    "train": ["train", "DATA", "--out", "FILE/x"],
    "train-dense": ["train-dense", "DATA", "--out", "FILE/x"],
    "demo": ["demo", "--out", "FILE/x"],
    "bench map": ["bench", "map", "--out", "FILE/x"],
    "index build": ["index", "build", "DATA", "--out", "FILE/x"],
    "video-set": ["video-set", "DATA/clip.mp4", "--out", "FILE/x"],
}


def _invoke(args: list[str], tmp_path: Path) -> tuple[int, str]:
    (tmp_path / "some_file.png").write_text("keep me")
    (tmp_path / "data").mkdir(exist_ok=True)
    spelled = [arg.replace("FILE", str(tmp_path / "some_file.png")).replace("DATA", str(tmp_path / "data"))
               for arg in args]
    result = CliRunner().invoke(main, spelled)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert (tmp_path / "some_file.png").read_text() == "keep me"
    return result.exit_code, result.stderr


@pytest.mark.parametrize("args", FOLDER_INSIDE_A_FILE.values(), ids=FOLDER_INSIDE_A_FILE.keys())
def test_an_output_folder_inside_a_file_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    code, stderr = _invoke(args, tmp_path)
    assert code == 2, stderr
    assert f"{tmp_path}/some_file.png/x: cannot be created, {tmp_path}/some_file.png is a file" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("option", ["--preview", "--preview-instances"])
def test_synth_refuses_an_unusable_preview_path_before_rendering(option: str, tmp_path: Path) -> None:
    code, stderr = _invoke(["synth", str(tmp_path / "out"), "--preset", "tiny", "--virtual",
                            "--splits", "test", "--distractors", "0", option, "FILE/sheet.png"],
                           tmp_path)
    assert code == 2 and option in stderr
    assert f"cannot write {tmp_path}/some_file.png/sheet.png" in stderr
    assert not (tmp_path / "out").exists(), "nothing was rendered"


def test_an_output_folder_without_write_permission_is_refused(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != tmp_path)  # root may write anywhere
    code, stderr = _invoke(["synth", str(tmp_path / "new"), "--preset", "tiny"], tmp_path)
    assert code == 2 and f"no permission to write in {tmp_path}" in stderr


def test_usable_output_paths_pass_unchanged(tmp_path: Path) -> None:
    assert writable_folder(None, None, str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    assert writable_file(None, None, tmp_path / "new" / "sheet.png") == tmp_path / "new" / "sheet.png"
    assert writable_folder(None, None, None) is None and writable_file(None, None, None) is None
    assert not (tmp_path / "new").exists(), "checking creates nothing"
