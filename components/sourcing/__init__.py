from longalign.components.sourcing.component import sourcing

__all__ = ["sourcing"]
