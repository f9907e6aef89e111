"""All components (imports kfp's full DSL; not for use inside a component body).

``STAGE_COMPONENTS``: one per stage, compiled to ``components/<stage>/component.yaml``.
``COMPONENTS``: every reusable component by export name, with the folder and file it compiles to
(the stages plus the multi-node training launcher, ``components/training/launcher.yaml``, and
the data fingerprint in front of sourcing, ``components/sourcing/fingerprint.yaml``, and the
promotion gate at the end, ``components/promotion/component.yaml``).
"""

from longalign.components.generation.component import generation
from longalign.components.packing.component import packing
from longalign.components.packing.sharded import (packing_join, packing_part, packing_plan,
                                                  packing_write)
from longalign.components.promotion.component import promotion
from longalign.components.scoring.component import scoring
from longalign.components.sourcing.component import sourcing
from longalign.components.sourcing.fingerprint import fingerprint
from longalign.components.sourcing.sharded import sourcing_join, sourcing_part
from longalign.components.training.component import training
from longalign.components.training.launcher import training_launcher

STAGE_COMPONENTS = {
    "sourcing": sourcing,
    "generation": generation,
    "packing": packing,
    "training": training,
    "scoring": scoring,
}

# export name -> (folder under components/, compiled file name, component)
COMPONENTS = {stage: (stage, "component.yaml", c) for stage, c in STAGE_COMPONENTS.items()}
COMPONENTS["training_launcher"] = ("training", "launcher.yaml", training_launcher)
COMPONENTS["fingerprint"] = ("sourcing", "fingerprint.yaml", fingerprint)
COMPONENTS["promotion"] = ("promotion", "component.yaml", promotion)
# sourcing and packing over many pods (the longalign-sharded-* pipelines)
COMPONENTS["sourcing_part"] = ("sourcing", "part.yaml", sourcing_part)
COMPONENTS["sourcing_join"] = ("sourcing", "join.yaml", sourcing_join)
COMPONENTS["packing_part"] = ("packing", "part.yaml", packing_part)
COMPONENTS["packing_plan"] = ("packing", "plan.yaml", packing_plan)
COMPONENTS["packing_write"] = ("packing", "write.yaml", packing_write)
COMPONENTS["packing_join"] = ("packing", "join.yaml", packing_join)

__all__ = ["COMPONENTS", "STAGE_COMPONENTS", "fingerprint", "generation", "packing", "packing_join",
           "packing_part", "packing_plan", "packing_write", "promotion", "scoring", "sourcing",
           "sourcing_join", "sourcing_part", "training", "training_launcher"]
