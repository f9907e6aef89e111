"""The teacher interface: chats in, one Completion per chat out, in order (every teacher
implements it; ``teachers`` holds the local one and ``openai_teacher`` the API one)."""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

from longalign.endpoints.reply import Reply

Chat = list[dict[str, str]]
Completion = Reply  # one teacher reply (text, token usage, finish reason, error)
OnResult = Optional[Callable[[int, Reply], None]]
TRUNCATION_MARK = "\n\n[...]\n\n"


class Teacher(Protocol):
    """The interface every teacher implements."""

    name: str  # recorded in each sample's ``teacher`` column, e.g. "local:embedded:smollm2"
    fingerprint: str  # name + sampling settings: part of every journal key

    def window(self, configured: int) -> tuple[int, str]:
        """The context window in tokens given ``generation.teacher_context_tokens``, and what set
        it (``config`` or, for a local model, ``model positions``)."""

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to at most ``max_tokens`` teacher tokens by dropping its middle;
        the flag says whether anything was cut."""

    def complete(self, prompts: Sequence[Chat], max_new_tokens: int, on_result: OnResult = None) -> list[Completion]:
        """One completion per chat, in the order given; ``on_result`` sees each as it finishes."""
