"""Classification metrics as fastText's `test` and `test-label` report them.

Predictions are ranked label lists (best first) and gold answers are label sets, so the
same code serves single-label data (precision@1 == accuracy) and multi-label data.
"""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np


@dataclass
class ClassificationReport:
    num_examples: int
    k: int
    accuracy: float              # top-1 prediction is one of the gold labels
    precision_at_k: float        # fastText: correct predictions / predictions made
    recall_at_k: float           # fastText: correct predictions / gold labels
    per_class_precision: np.ndarray
    per_class_recall: np.ndarray
    per_class_f1: np.ndarray
    confusion: np.ndarray        # [gold, top-1 predicted], single-label view (first gold label)

    def as_dict(self, label_names: Sequence[str]) -> dict:
        return {
            "n_test": self.num_examples, "k": self.k, "accuracy": self.accuracy,
            "precision_at_k": self.precision_at_k, "recall_at_k": self.recall_at_k,
            "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f)}
                          for name, p, r, f in zip(label_names, self.per_class_precision,
                                                   self.per_class_recall, self.per_class_f1)},
            "confusion_matrix": self.confusion.tolist(),
        }


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def classification_report(ranked: List[Sequence[int]], gold: List[Sequence[int]], num_labels: int,
                          k: int) -> ClassificationReport:
    """Metrics of ranked top-k predictions against gold label sets."""
    correct_at_k = predicted_at_k = gold_total = top1_correct = 0
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    for predicted, labels in zip(ranked, gold):
        labels = set(labels)
        top = list(predicted[:k])
        correct_at_k += sum(1 for p in top if p in labels)
        predicted_at_k += len(top)
        gold_total += len(labels)
        if top:
            top1_correct += top[0] in labels
            confusion[min(labels), top[0]] += 1
    true_positive = np.diag(confusion).astype(np.float64)
    precision = _safe_divide(true_positive, confusion.sum(axis=0))
    recall = _safe_divide(true_positive, confusion.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    n = len(gold)
    return ClassificationReport(n, k, top1_correct / n if n else 0.0,
                                correct_at_k / predicted_at_k if predicted_at_k else 0.0,
                                correct_at_k / gold_total if gold_total else 0.0,
                                precision, recall, f1, confusion)
