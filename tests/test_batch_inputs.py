"""Plumbing of ``anymask batch`` without a model: inputs (folder, glob, CSV, JSONL), the run manifest, the lock,
the settings check, and the CLI's errors and help."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from anymask import cli
from anymask.batch import TaskSpec, read_inputs
from anymask.batch.inputs import InputError, parse_boxes
from anymask.batch.manifest import ManifestWriter, check_settings, locked_output, read_manifest, scan_results
from anymask.errors import OutputError, PromptError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_is_searched_recursively_with_unique_ids(tmp_path):
    _touch(tmp_path / "b.jpg")
    _touch(tmp_path / "a.png")
    _touch(tmp_path / "a.jpg")  # same stem as a.png: both keep their suffix
    _touch(tmp_path / "sub" / "c.JPG")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden.jpg")
    _touch(tmp_path / ".cache" / "d.jpg")
    items = read_inputs(tmp_path, "embed")
    assert [it.id for it in items] == ["a.jpg", "a.png", "b", "sub/c"]
    assert items[3].image == str(tmp_path / "sub" / "c.JPG")
    assert all(it.boxes is None for it in items)


def test_glob_pattern_ids_are_relative_to_its_fixed_folder(tmp_path):
    _touch(tmp_path / "x" / "1.jpg")
    _touch(tmp_path / "y" / "1.jpg")
    _touch(tmp_path / "y" / "2.txt")
    items = read_inputs(f"{tmp_path}/*/*.*", "embed")
    assert [it.id for it in items] == ["x/1", "y/1"]
    with pytest.raises(InputError, match="no image files"):
        read_inputs(f"{tmp_path}/*/*.gif", "embed")


def test_csv_and_jsonl_manifests_with_boxes(tmp_path):
    _touch(tmp_path / "img" / "p.jpg")
    boxes_file = tmp_path / "det" / "q.json"
    boxes_file.parent.mkdir()
    boxes_file.write_text(json.dumps({"boxes": [{"box": [1, 2, 30, 40], "label": "dog", "score": 0.9}]}))
    csv_path = tmp_path / "m.csv"
    csv_path.write_text('image,boxes\nimg/p.jpg,"[[0, 0, 10, 10], [5, 5, 20, 20]]"\n/abs/q.jpg,\n')
    items = read_inputs(csv_path, "everything")
    assert [it.id for it in items] == ["img/p", "q"]  # outside the manifest's folder: the stem
    assert items[0].image == str(tmp_path / "img" / "p.jpg")
    assert items[0].boxes == [{"box": [0.0, 0.0, 10.0, 10.0]}, {"box": [5.0, 5.0, 20.0, 20.0]}]
    with pytest.raises(InputError, match="needs a manifest with a 'boxes'"):
        read_inputs(csv_path, "boxes")  # the second row has no boxes

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"image": "img/p.jpg", "id": "first", "boxes": [[0, 0, 5, 5]]}) + "\n\n"
                     + json.dumps({"image": "img/p.jpg", "boxes_file": "det/q.json"}) + "\n")
    items = read_inputs(jsonl, "boxes")
    assert [it.id for it in items] == ["first", "img/p"]
    assert items[1].boxes is None and items[1].boxes_file == str(boxes_file)
    from anymask.batch.inputs import read_boxes_file

    assert read_boxes_file(boxes_file) == [{"box": [1.0, 2.0, 30.0, 40.0], "label": "dog", "score": 0.9}]
    row = items[0].to_row()
    assert type(items[0]).from_row(row) == items[0]  # the form items travel in to Ray workers


@pytest.mark.parametrize("text, message", [
    ("path\nimg.jpg\n", "must name an 'image' column"),
    ("image,id\na.jpg,same\nb.jpg,same\n", "already used on line 2"),
    ("image,id\na.jpg,../up\n", "not a usable relative name"),
    ('image,boxes\na.jpg,"[[10, 0, 5, 5]]"\n', "x0 <= x1"),
    ("image,boxes\na.jpg,not json\n", "'boxes' is not JSON"),
])
def test_malformed_manifests_raise_clear_errors(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises((InputError, PromptError), match=message):
        read_inputs(path, "boxes")


def test_missing_or_empty_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_inputs(tmp_path / "nope", "embed")
    with pytest.raises(InputError, match="no image files"):
        read_inputs(tmp_path, "embed")
    with pytest.raises(InputError, match="give a folder, a glob pattern or a manifest"):
        read_inputs(_touch(tmp_path / "one.jpg"), "embed")
    with pytest.raises(PromptError, match="boxes must be a list"):
        parse_boxes({"box": [0, 0, 1, 1]}, "here")


def test_manifest_keeps_whole_lines_and_the_latest_status(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with ManifestWriter(path, "run1") as writer:
        writer.append([{"id": "a", "status": "failed", "reason": "bad"}, {"id": "b", "status": "done"}])
    with path.open("a") as handle:
        handle.write('{"id": "c", "status": "do')  # a torn line, as a power cut would leave
    with ManifestWriter(path, "run2") as writer:
        writer.append([{"id": "a", "status": "done"}])
    latest = read_manifest(path)
    assert {k: v["status"] for k, v in latest.items()} == {"a": "done", "b": "done"}
    assert latest["a"]["run"] == "run2"
    assert all(json.loads(line) for line in path.read_text().splitlines()[-1:])


def test_scan_results_removes_temporary_files(tmp_path):
    _touch(tmp_path / "embeddings" / "a.npz")
    _touch(tmp_path / "embeddings" / "sub" / "b.npz")
    tmp = _touch(tmp_path / "embeddings" / "sub" / ".c.npz.k2j3.tmp")
    assert scan_results(tmp_path, "embeddings", ".npz") == {"a", "sub/b"}
    assert not tmp.exists()


def test_output_folder_lock_and_settings(tmp_path):
    out = tmp_path / "out"
    with locked_output(out):
        with pytest.raises(OutputError, match="another anymask batch run"):
            with locked_output(out):
                pass
    check_settings(out, TaskSpec("embed").settings())
    check_settings(out, TaskSpec("embed", threads=4).settings())  # threads do not change results
    with pytest.raises(OutputError, match="other settings.*points_per_side"):
        check_settings(out, TaskSpec("everything", generator={"points_per_side": 8}).settings())


def test_cli_ray_engine_without_ray_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _touch(tmp_path / "in" / "a.jpg")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = cli.main(["batch", "embed", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--engine", "ray", "-q"])
    assert code == 1
    assert "pip install 'anymask[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_bad_options_fail_before_any_work(tmp_path, capsys):
    _touch(tmp_path / "in" / "a.jpg")
    out = tmp_path / "out"
    assert cli.main(["batch", "embed", str(tmp_path / "in"), "-o", str(out), "--workers", "-1"]) == PromptError.exit_code
    assert cli.main(["batch", "embed", str(tmp_path / "in"), "-o", str(out), "--engine", "ray", "--workers", "0"]) == 4
    assert cli.main(["batch", "everything", str(tmp_path / "in"), "-o", str(out), "--pred-iou-thresh", "2"]) == 4
    assert cli.main(["batch", "boxes", str(tmp_path / "in"), "-o", str(out)]) == InputError.exit_code
    assert "needs a manifest" in capsys.readouterr().err


def test_cli_help_explains_every_option():
    parser = cli._build_parser()
    batch = parser._subparsers._group_actions[0].choices["batch"]
    for name, task in batch._subparsers._group_actions[0].choices.items():
        for action in task._actions:
            assert action.help, f"batch {name}: option {action.option_strings or action.dest} has no help"
