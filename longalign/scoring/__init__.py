"""Scoring stage: offline long-context checks (needle in a haystack, RULER/HELMET-style recall) and,
with a judge endpoint, LongBench-Chat; a fine-tuned model against its base and, optionally, against a
previous run's report, as a self-contained HTML report and KFP metrics.

Answers come from an :class:`Answerer`: local transformers generation, or any OpenAI-compatible
endpoint (:class:`OpenAIAnswerer`, e.g. vLLM serving the trained checkpoint).
"""

from longalign.scoring.answerer import Answerer, TransformersAnswerer
from longalign.scoring.judge import parse_rating
from longalign.scoring.matching import exact_match, normalize
from longalign.scoring.remote import OpenAIAnswerer
from longalign.scoring.stage import score

__all__ = ["Answerer", "OpenAIAnswerer", "TransformersAnswerer", "exact_match", "normalize",
           "parse_rating", "score"]
