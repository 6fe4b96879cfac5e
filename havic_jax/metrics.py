"""Detection metrics of the eval protocol (spec §12): ACC at threshold 0.5, AP and AUC.

Scores are probabilities of "fake" (label 1). AP and AUC are scikit-learn's
``average_precision_score`` and ``roc_auc_score``; with a single class present they are NaN.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
from sklearn import metrics as sk_metrics

THRESHOLD = 0.5  # ACC decision threshold on the fake probability


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
