from longalign.components.packing.component import packing

__all__ = ["packing"]
