"""Scoring stage: offline long-context checks (needle in a haystack, RULER/HELMET-style recall) of a
fine-tuned model and its base, with a self-contained HTML report.

Answers come from an :class:`Answerer` (local transformers generation today; an OpenAI-compatible
client and LongBench-Chat with an LLM judge can plug into the same interface).
"""

from longalign.scoring.answerer import Answerer, TransformersAnswerer
from longalign.scoring.matching import exact_match, normalize
from longalign.scoring.stage import score

__all__ = ["Answerer", "TransformersAnswerer", "exact_match", "normalize", "score"]
