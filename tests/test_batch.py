"""``anymask batch`` with the real MobileSAM on real COCO128 photos: both engines, bad files among good ones, a
killed driver and a killed worker, then resuming.

Worker processes load the model themselves (seconds each), so runs are few and small: 2 to 4 photos, workers
with one thread, segment-everything on a 4 x 4 grid. Ray is started once for the module (2 CPUs, no dashboard).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anymask import ImageEmbedding, cli
from anymask.batch import TaskSpec, read_inputs, read_manifest, run_batch
from anymask.batch.tasks import CRASH_ENV
from anymask.errors import ImageError
from anymask.masks import decode_rle, iou

from conftest import REPO_ROOT, load_mask

SRC = str(REPO_ROOT / "src")
PHOTOS = ("000000000009.jpg", "000000000025.jpg", "000000000030.jpg", "000000000034.jpg")


def _photos(shared_data: Path, folder: Path, names=PHOTOS) -> Path:
    """``folder`` with symbolic links to COCO128 photos (the data is not copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(shared_data / "coco128_instances" / "images" / name)
    return folder


def _add_bad_files(folder: Path, shared_data: Path) -> None:
    data = (shared_data / "coco128_instances" / "images" / PHOTOS[0]).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "text.png").write_text("this is not an image\n")


def _statuses(out: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in read_manifest(out / "manifest.jsonl").items()}


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference_embedding(mobile_sam, shared_data) -> ImageEmbedding:
    """The first photo's embedding computed in this process (torch backend, as the workers use here)."""
    from anymask import Predictor

    return Predictor(mobile_sam, backend="torch").set_image(shared_data / "coco128_instances" / "images" / PHOTOS[0])


@pytest.fixture(scope="module")
def worker_env():
    """Worker processes import anymask from this checkout and run the exact torch backend."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = SRC + (os.pathsep + old if old else "")
    assert os.environ.get("ANYMASK_BACKEND") == "torch"  # set by conftest
    yield
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


def test_local_embed_with_bad_files_and_a_dying_worker_then_rerun(tmp_path, shared_data, worker_env,
                                                                  reference_embedding, monkeypatch, capsys):
    src = _photos(shared_data, tmp_path / "in", PHOTOS[:3])
    _add_bad_files(src, shared_data)
    monkeypatch.setenv(CRASH_ENV, "000000000025")  # that photo kills its worker process, every time
    out = tmp_path / "out"
    args = ["batch", "embed", str(src), "-o", str(out), "--workers", "2", "--batch-size", "1", "-q"]
    assert cli.main(args) == ImageError.exit_code  # some images failed, the others are done
    captured = capsys.readouterr()
    assert "2 done, 0 skipped, 3 failed of 5 images" in captured.out
    manifest = read_manifest(out / "manifest.jsonl")
    assert {k: v["status"] for k, v in manifest.items()} == {
        "000000000009": "done", "000000000025": "failed", "000000000030": "done", "truncated": "failed",
        "text": "failed"}
    assert "not a recognised image file" in manifest["text"]["reason"]
    assert "truncated" in manifest["truncated"]["reason"]
    assert "worker process died" in manifest["000000000025"]["reason"]
    assert "000000000025: the worker process died" in captured.err
    embedding = ImageEmbedding.load(out / "embeddings" / "000000000009.npz")
    assert embedding.original_size == reference_embedding.original_size == (480, 640)
    np.testing.assert_allclose(embedding.features, reference_embedding.features, atol=1e-4)
    assert json.loads((out / "run.json").read_text())["settings"]["task"] == "embed"
    assert not _leftovers(out) and not (out / "embeddings" / "000000000025.npz").exists()

    # rerun without the bad files and the crash: finished images skipped, the failed photo done
    monkeypatch.delenv(CRASH_ENV)
    (src / "text.png").unlink()
    (src / "truncated.jpg").unlink()
    assert cli.main(args[:-5] + ["--workers", "0", "-q"]) == 0
    assert "1 done, 2 skipped, 0 failed of 3 images" in capsys.readouterr().out
    statuses = _statuses(out)
    assert [statuses[Path(p).stem] for p in PHOTOS[:3]] == ["done"] * 3
    assert not _leftovers(out)


def test_local_everything_and_boxes_on_real_photos(tmp_path, shared_data, worker_env, capsys):
    data = shared_data / "coco128_instances"
    src = _photos(shared_data, tmp_path / "in", PHOTOS[:1])
    out = tmp_path / "everything"
    # in this process (--workers 0): the engine's worker processes are tested above
    assert cli.main(["batch", "everything", str(src), "-o", str(out), "--points-per-side", "4", "--coco", "--workers",
                     "0", "-q"]) == 0
    for name in PHOTOS[:1]:
        result = json.loads((out / "masks" / f"{Path(name).stem}.json").read_text())
        assert result["task"] == "everything" and result["annotations"]
        h, w = result["image"]["height"], result["image"]["width"]
        for ann in result["annotations"]:
            mask = decode_rle(ann["segmentation"])
            assert mask.shape == (h, w) and mask.sum() == ann["area"] > 0
            assert ann["score"] > 0.88 and ann["stability_score"] >= 0.95
    coco = json.loads((out / "coco.json").read_text())
    assert [im["id"] for im in coco["images"]] == [1]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) > 0

    # boxes: the ground-truth boxes of the 3 largest objects of each photo, as a detector would give them
    index = json.loads((data / "index.json").read_text())
    lines, truth = [], {}
    for name in PHOTOS[:2]:
        objects = sorted((r for r in index if r["image"] == name and not r["iscrowd"]), key=lambda r: -r["area"])[:3]
        boxes = [{"box": [x, y, x + bw, y + bh], "label": r["category"], "ann_id": r["ann_id"]}
                 for r in objects for x, y, bw, bh in [r["bbox_xywh"]]]
        lines.append(json.dumps({"image": str(data / "images" / name), "boxes": boxes}))
        truth.update({r["ann_id"]: data / "masks" / r["mask"] for r in objects})
    manifest = tmp_path / "boxes.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "boxes"
    assert cli.main(["batch", "boxes", str(manifest), "-o", str(out), "--workers", "0", "-q"]) == 0
    ious = []
    for name in PHOTOS[:2]:
        result = json.loads((out / "masks" / f"{Path(name).stem}.json").read_text())
        assert len(result["annotations"]) == len([a for a in truth.values() if a.name.startswith(Path(name).stem)])
        for ann in result["annotations"]:
            assert ann["prompt"]["label"] and len(ann["prompt"]["box"]) == 4
            mask = decode_rle(ann["segmentation"])
            x0, y0, x1, y1 = (int(round(v)) for v in ann["prompt"]["box"])
            assert mask[y0 : y1 + 1, x0 : x1 + 1].sum() >= 0.95 * mask.sum() > 0  # the mask lies in its box
            ious.append(iou(mask, load_mask(truth[ann["prompt"]["ann_id"]])))
    # COCO's polygons are coarse and a box can hold several things: a loose bar per object, a firmer one on average
    assert min(ious) > 0.3 and np.mean(ious) > 0.6, ious
    assert "2 done, 0 skipped, 0 failed of 2 images" in capsys.readouterr().out


def test_killed_driver_loses_no_finished_result_and_the_rerun_completes(tmp_path, shared_data, worker_env):
    src = _photos(shared_data, tmp_path / "in", PHOTOS[:2])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "anymask", "batch", "embed", str(src), "-o", str(out), "--workers", "1",
               "--batch-size", "1", "-q"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "done" not in _statuses(out).values():
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)  # while the worker is in the middle of the next image
    driver.wait()
    driver.stderr.close()
    first = _statuses(out)
    assert first == {"000000000009": "done"}
    workers = {int(r["worker"].rsplit(":", 1)[1]) for r in read_manifest(out / "manifest.jsonl").values()}
    time.sleep(1.0)
    for pid in workers:  # the worker died with its driver: nothing writes into OUT any more
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()

    summary = run_batch(read_inputs(src, "embed"), TaskSpec("embed", threads=2), out, workers=0, progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (1, 1, 0)
    assert _statuses(out) == {"000000000009": "done", "000000000025": "done"}
    for name in PHOTOS[:2]:
        assert ImageEmbedding.load(out / "embeddings" / f"{Path(name).stem}.npz").features.shape == (1, 256, 64, 64)
    assert not _leftovers(out)


@pytest.fixture(scope="module")
def local_ray(worker_env, tmp_path_factory):
    """A Ray instance on this machine for the module: 2 CPUs, no dashboard, a small object store."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False,
             logging_level="warning")
    yield ray
    ray.shutdown()


def test_ray_engine_gives_the_local_engine_results(tmp_path, shared_data, local_ray, reference_embedding):
    src = _photos(shared_data, tmp_path / "in", PHOTOS[:3])
    _add_bad_files(src, shared_data)
    out = tmp_path / "out"
    items = read_inputs(src, "embed")
    summary = run_batch(items, TaskSpec("embed", threads=1), out, engine="ray", workers=2, batch_size=2,
                        progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (3, 0, 2)
    statuses = _statuses(out)
    assert statuses["text"] == statuses["truncated"] == "failed"
    assert [statuses[Path(p).stem] for p in PHOTOS[:3]] == ["done"] * 3
    embedding = ImageEmbedding.load(out / "embeddings" / "000000000009.npz")
    np.testing.assert_allclose(embedding.features, reference_embedding.features, atol=1e-4)
    assert local_ray.is_initialized()  # the engine used the running Ray and left it running

    for path in (src / "text.png", src / "truncated.jpg"):
        path.unlink()
    summary = run_batch(read_inputs(src, "embed"), TaskSpec("embed", threads=1), out, engine="ray", workers=2,
                        progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (0, 3, 0)  # nothing left: Ray is not even used
