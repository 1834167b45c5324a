"""DAVIS region (J) and boundary (F) measures for video object segmentation.

- J: region similarity, the IoU of a predicted and a ground-truth ``(H, W)`` mask (1.0 when both are empty).
- F: boundary F-measure as in the DAVIS benchmark (Perazzi et al. 2016, ``db_eval_boundary``): one-pixel
  boundaries of both masks (a pixel differs from its right, lower or lower-right neighbour), matched within a
  tolerance of ``ceil(0.008 * image diagonal)`` pixels by dilating the other boundary with a disk of that
  radius (cv2 elliptic structuring element); precision, recall, F = 2PR / (P + R).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # fraction of the image diagonal, as DAVIS


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool masks; 1.0 when both are empty (DAVIS convention)."""
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a ``(H, W)`` bool mask, DAVIS's ``seg2bmap`` at the mask's own size."""
    seg = mask.astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """DAVIS boundary F-measure of two ``(H, W)`` bool masks."""
    radius = tolerance if tolerance >= 1 else math.ceil(tolerance * math.hypot(*gt.shape))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(radius) + 1, 2 * int(radius) + 1))
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), disk) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), disk) > 0
    precision = float((pred_b & gt_dil).sum()) / n_pred
    recall = float((gt_b & pred_dil).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
