"""Detection metrics against independent NumPy formulas (AUC as the Mann–Whitney U statistic,
AP as the step sum over distinct thresholds), ties included; per-category and averaged metrics
on a hand-made example; ROC and PR points."""

import numpy as np
import pytest

from havic_jax.evaluation import metrics

# Fixed scores with ties inside each class and across classes (0.5 and 0.7 are both).
SCORES = np.array([0.9, 0.7, 0.7, 0.5, 0.5, 0.5, 0.3, 0.2, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 1])


def mann_whitney_auc(scores, labels):
  """P(score of a fake > score of a real), ties counting 1/2, over all n_pos·n_neg pairs."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  greater = (pos[:, None] > neg[None, :]).sum()
  ties = (pos[:, None] == neg[None, :]).sum()
  return (greater + 0.5 * ties) / (len(pos) * len(neg))


def step_average_precision(scores, labels):
  """Σ_k (R_k − R_{k−1}) P_k over the distinct thresholds t_k in decreasing order, where P_k
  and R_k are the precision and recall of predicting fake when score >= t_k (R_0 = 0)."""
  ap, previous_recall = 0.0, 0.0
  for threshold in np.unique(scores)[::-1]:
    predicted = scores >= threshold
    true_positives = (predicted & (labels == 1)).sum()
    recall = true_positives / (labels == 1).sum()
    ap += (recall - previous_recall) * true_positives / predicted.sum()
    previous_recall = recall
  return ap


def test_independent_formulas_on_hand_values():
  # Fixed example: fakes {0.9, 0.7, 0.5, 0.3, 0.1}, reals {0.7, 0.5, 0.5, 0.2, 0.2}.
  # U = 0.9: 5 | 0.7: 4 + ½ | 0.5: 2 + 2·½ | 0.3: 2 | 0.1: 0  -> 14.5 / 25.
  assert mann_whitney_auc(SCORES, LABELS) == pytest.approx(14.5 / 25)
  # Thresholds 0.9: P 1, R .2 | 0.7: P 2/3, R .4 | 0.5: P 1/2, R .6 | 0.3: P 4/7, R .8 |
  # 0.2: P 4/9 (R unchanged) | 0.1: P 1/2, R 1.
  assert step_average_precision(SCORES, LABELS) == pytest.approx(
      0.2 * (1 + 2 / 3 + 1 / 2 + 4 / 7 + 1 / 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_independent_formulas(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  scores = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1), 1)  # many ties
  result = metrics.binary_metrics(scores, labels)
  assert result["auc"] == pytest.approx(mann_whitney_auc(scores, labels), abs=1e-12)
  assert result["ap"] == pytest.approx(step_average_precision(scores, labels), abs=1e-12)
  assert result["acc"] == pytest.approx(np.mean((scores >= 0.5) == (labels == 1)))
  fixed = metrics.binary_metrics(SCORES, LABELS)
  assert fixed["auc"] == pytest.approx(14.5 / 25)
  assert fixed["ap"] == pytest.approx(step_average_precision(SCORES, LABELS))


def test_accuracy_counts_a_score_of_exactly_half_as_fake():
  result = metrics.binary_metrics(np.array([0.5, 0.49999, 0.5, 0.9]), np.array([1, 0, 0, 1]))
  assert result["acc"] == 0.75  # predictions 1, 0, 1, 1: only the real scored 0.5 is wrong


def test_single_class_gives_nan_ap_and_auc():
  result = metrics.binary_metrics(np.array([0.2, 0.8]), np.array([1, 1]))
  assert result["acc"] == 0.5 and np.isnan(result["ap"]) and np.isnan(result["auc"])


# Hand-made example: reals {0.1, 0.4, 0.6}; "A" fakes {0.7, 0.5}; "B" fakes {0.2, 0.9, 0.3},
# interleaved so that a wrong mask would pick up the other group's videos.
GROUP_SCORES = np.array([0.2, 0.1, 0.7, 0.9, 0.4, 0.5, 0.6, 0.3])
GROUPS = np.array(["B", "real", "A", "B", "real", "A", "real", "B"])
GROUP_LABELS = (GROUPS != "real").astype(int)


def test_group_metrics_score_each_group_against_all_reals():
  result = metrics.group_metrics(GROUP_SCORES, GROUP_LABELS, GROUPS)
  assert list(result) == ["A", "B"]
  # A against the reals: ranked 0.7F 0.6R 0.5F 0.4R 0.1R. AUC: 0.7 beats 3, 0.5 beats 2 of 3
  # reals -> 5/6; AP: precision 1/1 and 2/3 at the fakes -> 5/6; ACC: 0.6 real wrong -> 4/5.
  assert result["A"] == pytest.approx(
      {"acc": 4 / 5, "ap": 5 / 6, "auc": 5 / 6, "n_real": 3, "n_fake": 2})
  # B: ranked 0.9F 0.6R 0.4R 0.3F 0.2F 0.1R. AUC: (3 + 1 + 1) / 9; AP: (1 + 2/4 + 3/5) / 3;
  # ACC: reals 0.1 and 0.4 right, fakes 0.2 and 0.3 wrong -> 3/6.
  assert result["B"] == pytest.approx(
      {"acc": 3 / 6, "ap": 0.7, "auc": 5 / 9, "n_real": 3, "n_fake": 3})
  for name in ("A", "B"):
    chosen = np.isin(GROUPS, ["real", name])
    assert result[name]["auc"] == pytest.approx(
        mann_whitney_auc(GROUP_SCORES[chosen], GROUP_LABELS[chosen]))
    assert result[name]["ap"] == pytest.approx(
        step_average_precision(GROUP_SCORES[chosen], GROUP_LABELS[chosen]))


def test_group_metrics_order_and_validation():
  ordered = metrics.group_metrics(GROUP_SCORES, GROUP_LABELS, GROUPS, order=["B", "absent"])
  assert list(ordered) == ["B", "A"]  # listed first, absent skipped, unlisted follow sorted
  renamed = np.where(GROUPS == "real", "pristine", GROUPS)
  assert metrics.group_metrics(GROUP_SCORES, GROUP_LABELS, renamed, real_group="pristine",
                               order=["B", "A"]) == ordered
  with pytest.raises(ValueError, match="label 0"):
    metrics.group_metrics(GROUP_SCORES, 1 - GROUP_LABELS, GROUPS)


def test_average_metrics_is_the_unweighted_nanmean():
  per_group = {"A": {"ap": 0.9, "auc": 0.8, "acc": 0.1},
               "B": {"ap": 0.6, "auc": float("nan"), "acc": 0.2},
               "C": {"ap": 0.3, "auc": 0.5, "acc": 0.3}}
  assert metrics.average_metrics(per_group) == pytest.approx({"ap": 0.6, "auc": 0.65})
  assert metrics.average_metrics(per_group, keys=("acc",)) == pytest.approx({"acc": 0.2})
  all_nan = metrics.average_metrics({"A": {"ap": float("nan"), "auc": 0.5}})
  assert np.isnan(all_nan["ap"]) and all_nan["auc"] == 0.5


def test_roc_and_pr_points_integrate_to_auc_and_ap():
  fpr, tpr = metrics.roc_points(SCORES, LABELS)
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
  assert np.trapezoid(tpr, fpr) == pytest.approx(mann_whitney_auc(SCORES, LABELS))
  recall, precision = metrics.pr_points(SCORES, LABELS)
  assert (recall[0], recall[-1], precision[-1]) == (1, 0, 1)
  assert -np.sum(np.diff(recall) * precision[:-1]) == pytest.approx(
      step_average_precision(SCORES, LABELS))
  with pytest.raises(ValueError, match="both"):
    metrics.roc_points(SCORES, np.ones_like(LABELS))
