from longalign.components.generation.component import generation

__all__ = ["generation"]
