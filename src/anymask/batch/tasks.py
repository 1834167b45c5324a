"""The per-image work of a batch run, the same under every engine: load the image, compute, write the result.

:class:`TaskSpec` says what to compute (picklable: it travels to worker processes and Ray actors);
:class:`ImageWorker` loads the model once and then turns one :class:`~anymask.batch.inputs.BatchItem` after
another into a result file and a status record. Errors of one image never escape: they become a
``"failed"`` record with the reason, and the worker goes on with the next image.

Result files (``OUT/<folder>/<id><suffix>``, written atomically: a temporary file renamed into place, so a
result file that exists is complete):

* ``embed``: ``embeddings/<id>.npz``, :meth:`anymask.ImageEmbedding.save` (``features (1, 256, 64, 64)``,
  ``original_size``, ``input_size``, ``model``);
* ``everything``: ``masks/<id>.json``, every mask as a COCO annotation (see :mod:`anymask.coco`);
* ``boxes``: ``masks/<id>.json``, one mask per box as a COCO annotation with the prompt ``box`` (XYXY pixels)
  and the box entry's other keys (``label``, ``score`` from a detector) under ``"prompt"``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .inputs import BatchItem, read_boxes_file

logger = logging.getLogger(__name__)

#: folder and suffix of each task's result files inside OUT
RESULT_LAYOUT = {"embed": ("embeddings", ".npz"), "everything": ("masks", ".json"), "boxes": ("masks", ".json")}

#: test hook: a worker that is given the image with this id kills its own process (SIGKILL) first
CRASH_ENV = "ANYMASK_BATCH_TEST_CRASH_ON"


@dataclass(frozen=True)
class TaskSpec:
    """What every worker computes.

    Attributes:
        task: ``"embed"``, ``"everything"`` or ``"boxes"``.
        model: registry name (``mobile_sam``, ``vit_b``, ...); ``checkpoint`` / ``verify`` as in ``load_model``.
        backend: :class:`~anymask.Predictor` backend (``auto``, ``torch``, ``onnx``, ``onnx-int8``).
        generator: :class:`~anymask.automatic.AutomaticMaskGenerator` options (``everything``).
        multimask: ``boxes``: predict 3 masks per box and keep the best-scored (default: one mask per box).
        threads: compute threads per worker (torch and onnxruntime).
    """

    task: str
    model: str = "mobile_sam"
    checkpoint: str | None = None
    verify: bool = True
    backend: str = "auto"
    generator: dict[str, Any] = field(default_factory=dict)
    multimask: bool = False
    threads: int = 1

    def settings(self) -> dict[str, Any]:
        """What the results depend on: a rerun into the same folder must use the same settings."""
        out: dict[str, Any] = {"task": self.task, "model": self.model, "checkpoint": self.checkpoint}
        if self.task == "everything":
            out["generator"] = dict(self.generator)
        if self.task == "boxes":
            out["multimask"] = self.multimask
        return out


def result_path(out_dir: Path, task: str, item_id: str) -> Path:
    """Where the result of ``item_id`` goes."""
    folder, suffix = RESULT_LAYOUT[task]
    return out_dir / folder / f"{item_id}{suffix}"


class ImageWorker:
    """Loads the model once, then processes images one at a time: ``worker(item) -> status record``.

    A status record is a JSON-ready dict: ``id``, ``image``, ``status`` (``"done"`` or ``"failed"``), ``reason``
    (failed), ``output`` (path relative to OUT), ``seconds`` (``load``, ``compute``, ``write``, ``total``),
    ``worker`` (``host:pid``).
    """

    def __init__(self, spec: TaskSpec, out_dir: str | os.PathLike) -> None:
        self.spec = spec
        self.out_dir = Path(out_dir)
        threads = max(1, spec.threads)
        self.predictor = None
        if spec.task != "everything" and spec.checkpoint is None:  # the catalogue's weights: cached graphs?
            from ..onnx_predictor import OnnxPredictor

            # the graphs the Predictor below would run, without importing torch (~200 MB less per worker)
            self.predictor = OnnxPredictor.cached(spec.model, spec.backend, threads=threads)
        if self.predictor is None:
            import torch

            from ..models import load_model
            from ..predictor import Predictor

            torch.set_num_threads(threads)
            model = load_model(spec.model, checkpoint=spec.checkpoint, verify=spec.verify, progress=False)
            self.predictor = Predictor(model, backend=spec.backend)
        self.generator = None
        if spec.task == "everything":
            from ..automatic import AutomaticMaskGenerator

            self.generator = AutomaticMaskGenerator(self.predictor, **{**spec.generator, "output_mode": "coco_rle"})
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, item: BatchItem) -> dict[str, Any]:
        from ..errors import AnymaskError
        from ..images import load_image

        if os.environ.get(CRASH_ENV) == item.id:  # test hook: a worker process that dies on this image
            os.kill(os.getpid(), signal.SIGKILL)
        record: dict[str, Any] = {"id": item.id, "image": item.image, "worker": self.name}
        times: dict[str, float] = {}
        start = time.perf_counter()
        try:
            image = load_image(item.image)
            boxes = item.boxes if item.boxes is not None or item.boxes_file is None else read_boxes_file(item.boxes_file)
            times["load"] = time.perf_counter() - start
            t = time.perf_counter()
            result = self._compute(item, image, boxes)
            times["compute"] = time.perf_counter() - t
            t = time.perf_counter()
            path = self._write(item, image, result)
            times["write"] = time.perf_counter() - t
            record.update(status="done", output=path.relative_to(self.out_dir).as_posix())
        except AnymaskError as exc:
            record.update(status="failed", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one image's failure must not end the run; it is recorded
            logger.exception("unexpected error on %s", item.image)
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        times["total"] = time.perf_counter() - start
        record["seconds"] = {k: round(v, 4) for k, v in times.items()}
        return record

    def _compute(self, item: BatchItem, image, boxes) -> Any:
        if self.spec.task == "embed":
            return self.predictor.set_image(image)
        if self.spec.task == "everything":
            return self.generator.generate(image)
        return self._segment_boxes(image, boxes or [])

    def _segment_boxes(self, image, boxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One mask per box: ``[{"box", "mask" (H, W) bool, "score"}, ...]`` (no model call without boxes)."""
        import numpy as np

        if not boxes:
            return []
        self.predictor.set_image(image)
        xyxy = np.array([b["box"] for b in boxes], dtype=np.float64)
        masks, scores, _ = self.predictor.predict(box=xyxy, multimask=self.spec.multimask)  # (B, C, H, W), (B, C)
        best = scores.argmax(axis=1)
        return [{"entry": b, "mask": masks[i, best[i]], "score": float(scores[i, best[i]])}
                for i, b in enumerate(boxes)]

    def _write(self, item: BatchItem, image, result: Any) -> Path:
        from ..outputs import write_json

        path = result_path(self.out_dir, self.spec.task, item.id)
        if self.spec.task == "embed":
            return result.save(path)
        height, width = int(image.shape[0]), int(image.shape[1])
        if self.spec.task == "everything":
            from ..coco import everything_annotation

            annotations = [everything_annotation(m, 0, i) for i, m in enumerate(result, start=1)]
        else:
            annotations = [_box_annotation(r, i) for i, r in enumerate(result, start=1)]
        document = {
            "anymask_version": __version__,
            "task": self.spec.task,
            "id": item.id,
            "image": {"file_name": Path(item.image).name, "path": item.image, "width": width, "height": height},
            "annotations": annotations,
        }
        return write_json(path, document)


def lost_record(item: BatchItem, spec: TaskSpec, out_dir: Path, reason: str) -> dict[str, Any]:
    """The status of an image whose worker died: done if its result file was written before, else failed."""
    path = result_path(out_dir, spec.task, item.id)
    if path.is_file():
        return {"id": item.id, "image": item.image, "status": "done", "recovered": True,
                "output": path.relative_to(out_dir).as_posix()}
    return {"id": item.id, "image": item.image, "status": "failed", "reason": reason}


def _box_annotation(result: dict[str, Any], ann_id: int) -> dict[str, Any]:
    """A COCO annotation (``image_id`` 0 until merged) for one box prompt's mask."""
    from ..coco import OBJECT_CATEGORY, rle_bbox
    from ..masks import encode_rle, mask_area

    rle = encode_rle(result["mask"])
    return {
        "id": ann_id, "image_id": 0, "category_id": OBJECT_CATEGORY["id"], "segmentation": rle,
        "area": mask_area(result["mask"]), "bbox": rle_bbox(rle), "iscrowd": 0, "score": result["score"],
        "prompt": result["entry"],
    }


__all__ = ["CRASH_ENV", "ImageWorker", "RESULT_LAYOUT", "TaskSpec", "lost_record", "result_path"]
