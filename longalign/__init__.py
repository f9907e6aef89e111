"""longalign: the LongAlign long-context alignment recipe as a Kubeflow Pipelines DAG.

Stages (subpackage / CLI subcommand / KFP component / config section):
sourcing / source, generation / generate, packing / pack, training / train, scoring / score.
"""

__version__ = "0.1.0"
