from longalign.components.training.component import training

__all__ = ["training"]
