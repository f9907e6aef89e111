from longalign.components.scoring.component import scoring

__all__ = ["scoring"]
