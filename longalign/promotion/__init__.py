"""Promotion: the gate at the end of a run and the registry of promoted models.

``promote(config, model_dir, scores_dir, output, ...)`` compares the run's scores with the last
promoted version of ``config.model_name`` and registers the model when the gate passes, in a
local file index (``registry: local``) or the Kubeflow Model Registry (``registry: kubeflow``).
"""

from longalign.promotion.gate import gate
from longalign.promotion.index import LocalIndex
from longalign.promotion.stage import open_registry, promote

__all__ = ["LocalIndex", "gate", "open_registry", "promote"]
