"""Agreement measures for classifications: ISPRS filter-test errors and precision / recall / F1."""

from __future__ import annotations

import numpy as np

__all__ = ["ISPRS_SAMPLES", "filter_errors", "precision_recall_f1"]

#: the 15 reference samples of the ISPRS filter test (``<name>.laz`` under the shared data's ``isprs`` folder)
ISPRS_SAMPLES = ("samp11", "samp12", "samp21", "samp22", "samp23", "samp24", "samp31", "samp41", "samp42", "samp51",
                 "samp52", "samp53", "samp54", "samp61", "samp71")


def filter_errors(truth_ground: np.ndarray, pred_ground: np.ndarray) -> dict[str, float]:
    """ISPRS filter-test measures (Sithole & Vosselman 2004) as fractions.

    type1: ground rejected as object / ground; type2: object accepted as ground / object; total: all errors /
    all points; kappa: Cohen's kappa of the ground / object confusion matrix.
    """
    t = np.asarray(truth_ground, dtype=bool)
    p = np.asarray(pred_ground, dtype=bool)
    a = float(np.sum(t & p))
    b = float(np.sum(t & ~p))
    c = float(np.sum(~t & p))
    d = float(np.sum(~t & ~p))
    n = a + b + c + d
    if n == 0:
        raise ValueError("no points to compare")
    po = (a + d) / n
    pe = ((a + b) * (a + c) + (c + d) * (b + d)) / n**2
    return {
        "type1": b / (a + b) if a + b else 0.0,
        "type2": c / (c + d) if c + d else 0.0,
        "total": (b + c) / n,
        "kappa": (po - pe) / (1 - pe) if pe < 1 else 1.0,
    }


def precision_recall_f1(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of a predicted mask against a true mask."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    tp = float(np.sum(t & p))
    precision = tp / float(p.sum()) if p.any() else 0.0
    recall = tp / float(t.sum()) if t.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
