"""Detection metrics of the eval protocol (spec §12): ACC at threshold 0.5, AP and AUC, per
fake category and averaged over categories, and the points of ROC and PR curves.

Scores are probabilities of "fake" (label 1). AP and AUC are scikit-learn's
``average_precision_score`` and ``roc_auc_score``; with a single class present they are NaN.
"""

from __future__ import annotations

import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from sklearn import metrics as sk_metrics

THRESHOLD = 0.5  # ACC decision threshold on the fake probability: score >= THRESHOLD is fake
REAL_GROUP = "real"  # the category name of real videos
AVERAGE_KEYS = ("ap", "auc")  # the metrics averaged over fake categories in the paper's tables


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """{"acc", "ap", "auc"} of fake probabilities ``scores`` [N] against 0/1 ``labels`` [N]."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(int)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
  acc = float(np.mean((scores >= THRESHOLD) == (labels == 1))) if len(labels) else float("nan")
  if len(np.unique(labels)) < 2:
    return {"acc": acc, "ap": float("nan"), "auc": float("nan")}
  return {"acc": acc, "ap": float(sk_metrics.average_precision_score(labels, scores)),
          "auc": float(sk_metrics.roc_auc_score(labels, scores))}


def group_metrics(scores: np.ndarray, labels: np.ndarray, groups: Sequence[str],
                  real_group: str = REAL_GROUP, order: Optional[Sequence[str]] = None
                  ) -> Dict[str, Dict[str, float]]:
  """Per fake category: the category's fakes scored against every real video.

  Args:
    scores: [N] fake probabilities.
    labels: [N] 0 (real) / 1 (fake); videos of ``real_group`` must be 0, all others 1.
    groups: [N] category names (e.g. "real", "RVFA", "FVRA-WL").
    real_group: the category of the real videos.
    order: the order of the returned categories; names absent from ``groups`` are skipped and
      fake categories missing from ``order`` follow, sorted. ``None``: sorted names.

  Returns:
    ``{category: {"acc", "ap", "auc", "n_real", "n_fake"}}`` (see :func:`binary_metrics`;
    counts are ints), one entry per fake category present.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(int)
  groups = np.asarray(groups, dtype=str)
  if not scores.shape == labels.shape == groups.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape}, labels {labels.shape} and groups {groups.shape} "
                     "must be equal 1-D shapes")
  real = groups == real_group
  if np.any(labels[real] != 0) or np.any(labels[~real] != 1):
    raise ValueError(f"videos of group {real_group!r} must have label 0 and all others label 1")
  present = set(groups[~real].tolist())
  listed = [g for g in (order or ()) if g in present]
  names = listed + sorted(present - set(listed))
  result = {}
  for name in names:
    chosen = real | (groups == name)
    result[name] = {**binary_metrics(scores[chosen], labels[chosen]),
                    "n_real": int(real.sum()), "n_fake": int((groups == name).sum())}
  return result


def average_metrics(per_group: Mapping[str, Mapping[str, float]],
                    keys: Sequence[str] = AVERAGE_KEYS) -> Dict[str, float]:
  """{key: unweighted mean over groups} of ``per_group`` (the output of
  :func:`group_metrics`); NaN values are ignored, a key that is NaN in every group is NaN."""
  result = {}
  for key in keys:
    values = np.array([metrics[key] for metrics in per_group.values()], np.float64)
    with warnings.catch_warnings():  # nanmean warns on an all-NaN (or empty) slice
      warnings.simplefilter("ignore", RuntimeWarning)
      result[key] = float(np.nanmean(values)) if len(values) else float("nan")
  return result


def _check_both_classes(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(int)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
  if len(np.unique(labels)) < 2:
    raise ValueError("a curve needs both real (0) and fake (1) labels")
  return scores, labels


def roc_points(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(false positive rate, true positive rate), each [K] from (0, 0) to (1, 1): the ROC curve
  of fake probabilities ``scores`` [N] against 0/1 ``labels`` [N] (both classes needed)."""
  scores, labels = _check_both_classes(scores, labels)
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
  return fpr, tpr


def pr_points(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(recall, precision), each [K] with recall decreasing to 0 (where precision is 1): the
  precision-recall curve of ``scores`` [N] against 0/1 ``labels`` [N] (both classes needed)."""
  scores, labels = _check_both_classes(scores, labels)
  precision, recall, _ = sk_metrics.precision_recall_curve(labels, scores)
  return recall, precision
