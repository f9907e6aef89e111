"""KFP components, one per stage (installed as ``longalign.components``; source in components/).

This package's __init__ stays empty on purpose: component bodies import
``longalign.components.common`` at run time, inside KFP's executor, where the full DSL is not
available. Import the components from ``longalign.components.registry`` or
``longalign.components.<stage>``.
"""
