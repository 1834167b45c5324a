"""Tests of the ``anymask`` command, run in-process through ``anymask.cli.main`` (plus one ``--help`` run
in a subprocess).

Image encodings take seconds on a CPU, so successful ``segment`` runs reuse the astronaut embedding
already computed by the session's ``predictor`` fixture (``reuse_embedding``: the same encoder on the same
pixels, see test_predictor.py); the first run loads the real checkpoint through the catalogue as a user's
run does, the others also reuse the session's model (``fast_segment``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anymask import __version__, cli, list_models, weights
from anymask.errors import ImageError, ModelError, OutputError, PromptError
from anymask.images import load_image
from anymask.masks import decode_rle, mask_to_box

from conftest import EXAMPLE_IMAGE, REPO_ROOT

STEM = EXAMPLE_IMAGE.stem  # "astronaut"


def _read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.mode, np.asarray(im)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture()
def reuse_embedding(monkeypatch, predictor):
    """Make ``Predictor.set_image`` reuse the session's astronaut embedding (other images: really encoded)."""
    from anymask.predictor import Predictor

    astronaut = load_image(EXAMPLE_IMAGE)
    real_set_image = Predictor.set_image
    calls = {"encoder": 0, "reused": 0}

    def set_image(self, image, pad_to_square=None):
        rgb = load_image(image)
        if self.spec.name == "mobile_sam" and np.array_equal(rgb, astronaut):
            calls["reused"] += 1
            self.set_embedding(predictor.embedding)
            return predictor.embedding
        calls["encoder"] += 1
        return real_set_image(self, image, pad_to_square=pad_to_square)

    monkeypatch.setattr(Predictor, "set_image", set_image)
    return calls


@pytest.fixture()
def fast_segment(monkeypatch, mobile_sam, reuse_embedding):
    """As ``reuse_embedding``, and ``load_model("mobile_sam")`` returns the session's loaded model."""
    from anymask import models

    real_load_model = models.load_model

    def load_model(name="mobile_sam", checkpoint=None, **kwargs):
        if models.get_model_spec(name).name == "mobile_sam" and checkpoint is None:
            return mobile_sam
        return real_load_model(name, checkpoint=checkpoint, **kwargs)

    monkeypatch.setattr(models, "load_model", load_model)
    return reuse_embedding


# ---------------------------------------------------------------------------------------------- help


def test_help_in_a_subprocess():
    """``python -m anymask --help`` and ``segment --help`` describe every option (and do not import torch)."""
    env_cmd = [sys.executable, "-X", "importtime", "-m", "anymask"]
    top = subprocess.run([*env_cmd, "--help"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert top.returncode == 0, top.stderr[-2000:]
    for word in ("segment", "weights", "models", "--version", "--verbose", "--quiet", "usage: anymask"):
        assert word in top.stdout, word
    imported = {line.split("|")[-1].strip() for line in top.stderr.splitlines() if line.startswith("import time:")}
    assert "anymask.cli" in imported
    assert "torch" not in imported, "anymask --help imported torch"

    seg = subprocess.run([sys.executable, "-m", "anymask", "segment", "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60)
    assert seg.returncode == 0, seg.stderr[-2000:]
    parser = cli._build_parser()
    segment_parser = next(a for a in parser._actions if a.dest == "command").choices["segment"]
    options = [a for a in segment_parser._actions if a.option_strings]
    assert len(options) >= 10
    for action in options:
        assert action.help and action.help.strip(), action.option_strings
        for flag in action.option_strings:
            assert flag in seg.stdout, flag
        # its description is shown too (the first few words; argparse re-wraps lines, even at hyphens)
        words = "".join(action.help.split()[:4])
        assert words in "".join(seg.stdout.split()), (action.option_strings, words)
    for flag in ("--point", "--box", "--model", "--checkpoint", "--no-verify", "--multimask", "--single-mask",
                 "--output", "-o", "--save", "--device"):
        assert flag in seg.stdout
    assert "IMAGE" in seg.stdout or "image" in seg.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"anymask {__version__}"


# ------------------------------------------------------------------------------------------ segment


def test_segment_point_writes_every_output(tmp_path, capsys, predictor, reuse_embedding):
    out = tmp_path / "out"
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), "--point", "405,150", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert reuse_embedding == {"encoder": 0, "reused": 1}
    assert captured.err == ""
    expected = {f"{STEM}_mask.png", f"{STEM}_cutout.png", f"{STEM}_overlay.png", f"{STEM}.json"}
    assert set(_files(out)) == expected
    assert sorted(Path(line).name for line in captured.out.splitlines()) == sorted(expected)

    mode, mask_png = _read_png(out / f"{STEM}_mask.png")
    assert mode == "L" and mask_png.shape == (512, 512)
    assert set(np.unique(mask_png)) <= {0, 255}
    mask = mask_png == 255

    # the same mask as the library gives for that click (best of 3)
    masks, scores, _ = predictor.predict(points=[(405, 150)], labels=[1])
    np.testing.assert_array_equal(mask, masks[scores.argmax()])
    assert mask[150, 405]

    record = json.loads((out / f"{STEM}.json").read_text())
    assert record["width"] == 512 and record["height"] == 512
    assert record["model"] == "mobile_sam" and record["multimask"] is True
    assert record["points"] == [{"x": 405.0, "y": 150.0, "label": 1}]
    assert len(record["objects"]) == 1
    obj = record["objects"][0]
    assert len(obj["masks"]) == 3
    assert obj["selected"] == int(np.argmax([m["score"] for m in obj["masks"]]))
    np.testing.assert_allclose([m["score"] for m in obj["masks"]], scores, atol=1e-5)
    chosen = obj["masks"][obj["selected"]]
    np.testing.assert_array_equal(decode_rle(chosen["segmentation"]), mask)
    assert chosen["segmentation"]["size"] == [512, 512] and isinstance(chosen["segmentation"]["counts"], str)
    assert chosen["area"] == int(mask.sum())
    x0, y0, x1, y1 = mask_to_box(mask)
    assert chosen["bbox"] == [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    assert chosen["polygons"] and all(len(p) % 2 == 0 and len(p) >= 6 for p in chosen["polygons"])
    xs = np.concatenate([p[0::2] for p in chosen["polygons"]])
    ys = np.concatenate([p[1::2] for p in chosen["polygons"]])
    assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() <= y1 + 1

    mode, cutout = _read_png(out / f"{STEM}_cutout.png")
    assert mode == "RGBA" and cutout.shape == (y1 - y0 + 1, x1 - x0 + 1, 4)
    assert np.array_equal(cutout[..., 3] == 255, mask[y0:y1 + 1, x0:x1 + 1])

    mode, overlay = _read_png(out / f"{STEM}_overlay.png")
    assert mode == "RGB" and overlay.shape == (512, 512, 3)
    image = load_image(EXAMPLE_IMAGE)
    assert not np.array_equal(overlay[mask], image[mask])  # tinted
    assert np.array_equal(overlay[:60, :60], image[:60, :60])  # far from mask and point: untouched


def test_segment_two_boxes(tmp_path, capsys, fast_segment):
    out = tmp_path / "out"
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), "--box", "275,340,512,512", "--box", "355,0,470,290",
                   "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert fast_segment == {"encoder": 0, "reused": 1}
    assert set(_files(out)) == {f"{STEM}_mask_0.png", f"{STEM}_mask_1.png", f"{STEM}_cutout_0.png",
                                f"{STEM}_cutout_1.png", f"{STEM}_overlay.png", f"{STEM}.json"}
    helmet = _read_png(out / f"{STEM}_mask_0.png")[1] == 255
    shuttle = _read_png(out / f"{STEM}_mask_1.png")[1] == 255
    assert helmet[450, 400] and not helmet[150, 405]
    assert shuttle[150, 405] and not shuttle[450, 400]
    record = json.loads((out / f"{STEM}.json").read_text())
    assert record["multimask"] is False
    assert [o["box"] for o in record["objects"]] == [[275, 340, 512, 512], [355, 0, 470, 290]]
    assert [len(o["masks"]) for o in record["objects"]] == [1, 1]
    np.testing.assert_array_equal(decode_rle(record["objects"][0]["masks"][0]["segmentation"]), helmet)
    np.testing.assert_array_equal(decode_rle(record["objects"][1]["masks"][0]["segmentation"]), shuttle)


def test_segment_save_subset(tmp_path, capsys, fast_segment):
    out = tmp_path / "out"
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), "--point", "405,150", "--point", "30,250,0",
                   "--save", "mask,json", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert _files(out) == [f"{STEM}.json", f"{STEM}_mask.png"]
    assert len(captured.out.splitlines()) == 2
    record = json.loads((out / f"{STEM}.json").read_text())
    assert record["points"][1] == {"x": 30.0, "y": 250.0, "label": 0}
    assert record["multimask"] is False  # two clicks: one mask by default


# ---------------------------------------------------------------------------------------- bad input


def _text_image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_text("hello, I am not a PNG\n")
    return path


BAD_SEGMENT_INPUT = {
    # id: (arguments after the image, image maker, error class, words the message must contain)
    "point-4-numbers": (["--point", "1,2,3,4"], None, PromptError, ["--point", "1,2,3,4", "2 or 3"]),
    "point-label-5": (["--point", "10,20,5"], None, PromptError, ["label", "5"]),
    "point-not-numbers": (["--point", "a,b"], None, PromptError, ["--point", "a,b"]),
    "no-prompt": ([], None, PromptError, ["--point", "--box"]),
    "box-3-numbers": (["--box", "1,2,3"], None, PromptError, ["--box", "4"]),
    "save-bogus": (["--point", "10,20", "--save", "bogus"], None, PromptError, ["--save", "bogus"]),
    "missing-image": (["--point", "10,20"], "missing", ImageError, ["missing.png", "no such file"]),
    "text-image": (["--point", "10,20"], "text", ImageError, ["photo.png", "not a recognised image"]),
    "unknown-model": (["--point", "10,20", "--model", "sam_xxl"], None, ModelError,
                      ["sam_xxl", "known models", "mobile_sam"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SEGMENT_INPUT))
def test_segment_bad_input(case, tmp_path, capsys, monkeypatch, mobile_sam):
    args, image_kind, error, words = BAD_SEGMENT_INPUT[case]
    # none of these may get as far as encoding an image
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", lambda *a, **k: 1 / 0)
    image = {None: EXAMPLE_IMAGE, "missing": tmp_path / "missing.png", "text": _text_image(tmp_path)}[image_kind]
    out = tmp_path / "out"
    rc = cli.main(["segment", str(image), *args, "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == error.exit_code != 0
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anymask: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert captured.out == ""
    assert _files(out) == []  # nothing written


def test_failed_segment_does_not_create_the_output_directory(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["segment", str(tmp_path / "missing.png"), "--point", "10,20", "-o", str(out)])
    assert rc == ImageError.exit_code
    assert "anymask: error:" in capsys.readouterr().err
    assert not out.exists()


def test_segment_output_dir_that_cannot_be_created(tmp_path, capsys, monkeypatch, mobile_sam):
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", lambda *a, **k: 1 / 0)
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file\n")
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), "--point", "10,20", "-o", str(blocker / "out")])
    captured = capsys.readouterr()
    assert rc == OutputError.exit_code != 0
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("anymask: error: ")
    assert "cannot create output directory" in lines[0] and str(blocker / "out") in lines[0]
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert blocker.read_text() == "I am a file\n"


def test_segment_point_outside_the_image(tmp_path, capsys, fast_segment):
    out = tmp_path / "out"
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), "--point", "600,20", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == PromptError.exit_code
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("anymask: error: ") and "outside the 512x512 image" in lines[0]
    assert _files(out) == []


# ------------------------------------------------------------------------------------ weights, models


def test_weights_list(capsys):
    assert cli.main(["weights", "list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "FILE"]
    names = [line.split()[0] for line in lines[1:]]
    assert sorted(names) == sorted(weights.catalog())
    row = next(line for line in lines if line.startswith("mobile_sam "))
    assert "mobile_sam.pt" in row and "Apache-2.0" in row


def test_weights_path_of_a_cached_checkpoint(capsys, mobile_sam_checkpoint):
    assert cli.main(["weights", "path", "mobile_sam"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 1
    path = Path(lines[0])
    assert path.is_file() and path.name == "mobile_sam.pt"
    assert path.resolve() == Path(mobile_sam_checkpoint).resolve()


def test_weights_path_of_a_checkpoint_not_cached(capsys, monkeypatch):
    monkeypatch.delenv("ANYMASK_WEIGHTS_DIR", raising=False)
    if weights.cached_path("vit_h") is not None:
        pytest.skip("vit_h happens to be cached here")
    rc = cli.main(["weights", "path", "vit_h"])
    captured = capsys.readouterr()
    assert rc != 0
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anymask: error: ") and "vit_h" in lines[0]


def test_weights_path_unknown_name(capsys):
    rc = cli.main(["weights", "path", "sam_xxl"])
    captured = capsys.readouterr()
    assert rc != 0
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("anymask: error: ") and "sam_xxl" in lines[0]
    assert "mobile_sam" in lines[0]  # lists the known names


def test_models_command(capsys):
    assert cli.main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    mobile = next(line for line in lines if line.startswith("mobile_sam "))
    assert "vit_t" in mobile and "1024" in mobile
    lite = next(line for line in lines if line.startswith("lite_medsam "))
    assert "256" in lite


def test_unknown_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ edge cases


def test_bad_device_is_one_line(tmp_path, capsys):
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), "--point", "10,20", "--device", "bogus", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()
    assert rc == ModelError.exit_code and len(err) == 1 and err[0].startswith("anymask: error: bad device")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("prompt", [["--box", "10,10,5,5"], ["--point", "600,20"], ["--box", "0,0,600,10"]])
def test_prompt_errors_are_found_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, prompt):
    from anymask import models

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a bad prompt")

    monkeypatch.setattr(models, "load_model", no_model)
    rc = cli.main(["segment", str(EXAMPLE_IMAGE), *prompt, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()
    assert rc == PromptError.exit_code and len(err) == 1 and err[0].startswith("anymask: error:")


def test_backend_choices_are_the_runtime_backends():
    """The CLI lists the backends without importing torch; they must be the runtime's own."""
    from anymask.cli.common import BACKENDS
    from anymask.runtime import BACKENDS as RUNTIME_BACKENDS

    assert BACKENDS == RUNTIME_BACKENDS
