"""KFP components, one per stage (installed as ``longalign.components``; source in the top-level components/ folder)."""

from longalign.components.generation import generation
from longalign.components.packing import packing
from longalign.components.scoring import scoring
from longalign.components.sourcing import sourcing
from longalign.components.training import training

STAGE_COMPONENTS = {
    "sourcing": sourcing,
    "generation": generation,
    "packing": packing,
    "training": training,
    "scoring": scoring,
}

__all__ = ["STAGE_COMPONENTS", "generation", "packing", "scoring", "sourcing", "training"]
