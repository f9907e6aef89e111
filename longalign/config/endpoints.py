"""Endpoint sections: every OpenAI-compatible chat-completions endpoint the stages call (the
generation teacher, the scoring answerer and judge) shares one shape, its key rule and its retry
and failure settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from longalign.config.base import Section as _Section


class _Endpoint(_Section):
    """Fields every OpenAI-compatible chat-completions endpoint has (teacher, answerer, judge).

    The API key is read from the file at ``api_key_file`` (a mounted secret; wins when set) or the
    environment variable named by ``api_key_env``; both null: no key is sent. Never from the command
    line or the config itself (longalign.secrets).
    """

    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key (null: none)")
    api_key_file: str | None = Field(
        None, description="file holding the API key, e.g. a mounted Secret (wins over api_key_env)")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight at once")
    timeout_seconds: float = Field(600.0, gt=0, description="per request")
    max_retries: int = Field(6, ge=0, description="on 429, 5xx, timeouts, dropped connections")
    backoff_seconds: float = Field(1.0, gt=0, description=(
        "First retry delay in seconds; doubles per retry, with jitter (a Retry-After wins)."))
    backoff_max_seconds: float = Field(60.0, gt=0, description="Longest backoff delay in seconds.")
    max_retry_after_seconds: float = Field(600.0, gt=0, description=(
        "A longer Retry-After asked by the server is cut to this many seconds."))
    max_failure_rate: float = Field(0.1, ge=0, le=1, description=(
        "The run fails when more than this share of its requests fail after retries "
        "(or when none succeeds); see docs/generation.md, failure semantics."))
    allow_partial: bool = Field(False, description=(
        "Finish a run whose failure rate exceeds max_failure_rate (never one without any success); "
        "the stage's stats and summary then report it as partial."))
    price_prompt_per_million: float = Field(
        0.0, ge=0, description="price per million prompt tokens, for the cost estimate in stats (any "
        "currency)")
    price_completion_per_million: float = Field(
        0.0, ge=0, description="price per million completion tokens, for the cost estimate")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated cost of this usage at the configured prices (per million tokens)."""
        return (prompt_tokens * self.price_prompt_per_million
                + completion_tokens * self.price_completion_per_million) / 1e6

    @model_validator(mode="after")
    def _check_url(self):
        url = getattr(self, "base_url", None)
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        return self


class TeacherAPIConfig(_Endpoint):
    """The generation teacher's endpoint (generation.teacher = openai; the model name is
    generation.teacher_model). Retries back off exponentially with jitter and honour Retry-After."""

    base_url: str | None = Field(
        None, description="e.g. http://vllm.teachers.svc:8000/v1 (required for teacher=openai)")
    temperature: float = Field(0.0, ge=0, le=2, description="teacher sampling temperature (0: greedy)")
    chars_per_token: float = Field(3.5, gt=0, description="to fit documents into teacher_context_tokens")


class EndpointConfig(_Endpoint):
    """A served model for scoring (vLLM, TGI, KServe, a hosted API): an answerer or the judge."""

    base_url: str = Field(description="OpenAI-compatible API root, e.g. http://vllm.models.svc:8000/v1")
    model: str = Field(description="the served model's name")
    concurrency: int = Field(4, ge=1, le=1024, description="requests in flight at once")
    timeout_seconds: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(4, ge=0, description="on 429, 5xx, timeouts, dropped connections")
    context: int | None = Field(None, ge=64, description="served model's context in tokens (answerers only)")
