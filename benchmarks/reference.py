"""The official implementations, run beside anymask on the same inputs (test and benchmark only).

Needs the test extras: ``segment-anything`` (official SAM), ``mobilesam-mirror`` (MobileSAM's original
code, which imports timm) and torchvision. The product never imports this module.

Checkpoints are loaded by anymask's safe loader (``weights_only=True``) and handed to the reference models
as state dicts: the reference builders' own ``torch.load`` would unpickle the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anymask import weights


def reference_predictor(name: str, checkpoint: Path | None = None, seed: int | None = None):
    """An official ``SamPredictor`` for ``name`` (``mobile_sam`` or ``vit_b``).

    With ``checkpoint=None`` the reference is built with random weights after ``torch.manual_seed(seed)``.
    """
    if name == "mobile_sam":
        from mobile_sam import SamPredictor, sam_model_registry

        builder = sam_model_registry["vit_t"]
    else:
        from segment_anything import SamPredictor, sam_model_registry

        builder = sam_model_registry[name]
    if seed is not None:
        torch.manual_seed(seed)
    model = builder(checkpoint=None)
    if checkpoint is not None:
        model.load_state_dict(weights.load_state_dict(checkpoint), strict=True)
    return SamPredictor(model.eval())


def interior_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` (x, y) points inside ``mask``: the deepest pixel first, then random deep ones."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(dist >= max(dist.max() * 0.5, 1))
    first = np.unravel_index(np.argmax(dist), dist.shape)
    picks = [(first[1], first[0])]
    for i in rng.choice(len(xs), size=count - 1, replace=len(xs) < count - 1):
        picks.append((xs[i], ys[i]))
    return np.array(picks, dtype=np.float64)


def exterior_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One (x, y) background point at least 10 px away from ``mask``."""
    import cv2

    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(dist > 10)
    i = rng.integers(len(xs))
    return np.array([[xs[i], ys[i]]], dtype=np.float64)


def prompt_suite(mask: np.ndarray, box: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Prompts for one ground-truth object: keyword arguments of anymask's ``Predictor.predict``.

    Kinds: ``point`` (one click, 3 masks), ``multi_point`` (2 foreground + 1 background, 1 mask), ``box``,
    ``box_point`` (box + one click), ``boxes`` (a batch of 3 boxes: the object's and two shifted copies).
    ``mask_input`` prompts are made by the caller from a first prediction's logits.
    """
    rng = np.random.default_rng(seed)
    fg = interior_points(mask, 2, rng)
    bg = exterior_point(mask, rng)
    h, w = mask.shape
    shifted = [np.clip(box + d, 0, [w, h, w, h]) for d in ((-15, -10, 5, 8), (10, 12, -6, -4))]
    return {
        "point": dict(points=fg[:1], labels=[1], multimask=True),
        "multi_point": dict(points=np.concatenate([fg, bg]), labels=[1, 1, 0], multimask=False),
        "box": dict(box=box, multimask=False),
        "box_point": dict(points=fg[:1], labels=[1], box=box, multimask=False),
        "boxes": dict(box=np.stack([box, *shifted]), multimask=True),
    }


def run_reference(ref, points=None, labels=None, box=None, mask_input=None, multimask=True):
    """Run the official predictor with anymask's prompt arguments; same output layout as anymask's."""
    if box is not None and np.ndim(box) == 2:
        image_shape = ref.original_size
        boxes_t = ref.transform.apply_boxes_torch(torch.as_tensor(box, dtype=torch.float32), image_shape)
        kwargs = {}
        if points is not None:
            coords = ref.transform.apply_coords(np.asarray(points, dtype=np.float64), image_shape)
            coords_t = torch.as_tensor(coords, dtype=torch.float32)[None].repeat(len(box), 1, 1)
            kwargs = dict(point_coords=coords_t, point_labels=torch.as_tensor(labels)[None].repeat(len(box), 1))
        else:
            kwargs = dict(point_coords=None, point_labels=None)
        with torch.inference_mode():
            masks, scores, low = ref.predict_torch(boxes=boxes_t, multimask_output=multimask, **kwargs)
        return masks.numpy(), scores.numpy(), low.numpy()
    return ref.predict(
        point_coords=None if points is None else np.asarray(points, dtype=np.float64),
        point_labels=None if labels is None else np.asarray(labels),
        box=None if box is None else np.asarray(box, dtype=np.float64),
        mask_input=mask_input,
        multimask_output=multimask,
    )


@dataclass
class Agreement:
    """Worst-case agreement of anymask with the reference over many predictions of one prompt kind."""

    min_iou: float = 1.0
    max_score_diff: float = 0.0
    max_logit_diff: float = 0.0
    count: int = 0
    ious: list[float] = field(default_factory=list)

    def update(self, ours: tuple, theirs: tuple) -> None:
        masks_a, scores_a, low_a = ours
        masks_b, scores_b, low_b = theirs
        assert masks_a.shape == masks_b.shape, (masks_a.shape, masks_b.shape)
        flat_a = masks_a.reshape(-1, *masks_a.shape[-2:])
        flat_b = masks_b.reshape(-1, *masks_b.shape[-2:])
        for a, b in zip(flat_a, flat_b):
            union = np.logical_or(a, b).sum()
            iou = 1.0 if union == 0 else np.logical_and(a, b).sum() / union
            self.ious.append(float(iou))
            self.min_iou = min(self.min_iou, float(iou))
        self.max_score_diff = max(self.max_score_diff, float(np.abs(scores_a - scores_b).max()))
        self.max_logit_diff = max(self.max_logit_diff, float(np.abs(low_a - low_b).max()))
        self.count += 1


PROMPT_KINDS = ("point", "multi_point", "box", "box_point", "boxes", "mask_input")


def compare_on(ours, ref, instances: list[dict], kinds=PROMPT_KINDS) -> dict[str, Agreement]:
    """Run anymask's predictor ``ours`` and the official ``ref`` on the same images and prompts.

    ``instances`` are index rows (see :mod:`benchmarks.datasets`) with an image, a ground-truth mask and
    its box; prompts come from :func:`prompt_suite`. ``mask_input`` feeds the best low-res logits of a first
    click (anymask's, given to both) back with the multi-point prompt.
    """
    from anymask.images import load_image

    from .datasets import box_of, load_mask

    results = {kind: Agreement() for kind in kinds}
    for n, row in enumerate(instances):
        image = load_image(row["image"])
        ours.set_image(image)
        ref.set_image(image)
        prompts = prompt_suite(load_mask(row["mask"]), box_of(row), seed=n)
        for kind, kwargs in prompts.items():
            if kind in results:
                results[kind].update(ours.predict(**kwargs), run_reference(ref, **kwargs))
        if "mask_input" in results:
            first = ours.predict(**prompts["point"])
            kwargs = dict(points=prompts["multi_point"]["points"], labels=[1, 1, 0],
                          mask_input=first[2][np.argmax(first[1])][None], multimask=False)
            results["mask_input"].update(ours.predict(**kwargs), run_reference(ref, **kwargs))
    return results
