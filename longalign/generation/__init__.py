"""The generation stage: long-context chat samples from a sourced corpus.

LongAlign's Self-Instruct procedure with a teacher model (``local``: a transformers causal LM;
``openai``: any OpenAI-compatible chat-completions endpoint, see ``openai_teacher``), resumable
through the request journal of longalign.endpoints, plus synthetic exact-answer recall tasks (JSON key-value
retrieval, needle) that need no model, and optional short chats mixed in.
"""

from longalign.generation.stage import generate
from longalign.generation.interface import Completion, Teacher
from longalign.generation.teachers import LocalTeacher

__all__ = ["generate", "Completion", "LocalTeacher", "Teacher"]
