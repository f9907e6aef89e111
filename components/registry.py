"""All stage components by stage name (imports kfp's full DSL; not for use inside a component body)."""

from longalign.components.generation.component import generation
from longalign.components.packing.component import packing
from longalign.components.scoring.component import scoring
from longalign.components.sourcing.component import sourcing
from longalign.components.training.component import training

STAGE_COMPONENTS = {
    "sourcing": sourcing,
    "generation": generation,
    "packing": packing,
    "training": training,
    "scoring": scoring,
}

__all__ = ["STAGE_COMPONENTS", "generation", "packing", "scoring", "sourcing", "training"]
