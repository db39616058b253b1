"""The scvi-tools training plan used by every sslspatial model, with one fix for multi-device training.

scvi-tools 1.4 logs the extra metrics of a :class:`~scvi.module.base.LossOutput` inside ``torch.inference_mode``, so
Lightning keeps them as inference tensors; under DDP the end-of-epoch all-reduce then updates them in place and fails
("Inplace update to inference tensor outside InferenceMode"). Models without extra metrics (e.g. SCVI) never hit
it; ours log masked fractions, accuracies and sub-spot diagnostics. :class:`TrainingPlan` logs the same metrics under
``torch.no_grad`` instead.
"""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan as _ScviTrainingPlan

__all__ = ["TrainingPlan"]

_undecorated = getattr(_ScviTrainingPlan.compute_and_log_metrics, "__wrapped__", None)


class TrainingPlan(_ScviTrainingPlan):
    """:class:`scvi.train.TrainingPlan` whose metric logging works under DDP (see the module docstring)."""

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """Log the losses and extra metrics of a minibatch (gradient-free, but not as inference tensors)."""
        if _undecorated is None:  # a future scvi-tools without the decorator
            return super().compute_and_log_metrics(loss_output, metrics, mode)
        with torch.no_grad():
            return _undecorated(self, loss_output, metrics, mode)
