"""One client for every OpenAI-compatible chat-completions endpoint the pipeline talks to: the
generation teacher, a served model under test (answerer) and the LongBench-Chat judge.

- ``client``: the HTTP client (the ``openai`` SDK, our retry policy, bounded concurrency, redaction);
- ``retry``: when to retry and how long to wait (Retry-After honoured);
- ``journal``: the durable request journal (successful replies; a rerun sends only what failed);
- ``reply``: the reply type and the usage/cost counter;
- ``failures``: when failed requests fail the run.
The endpoint config shape (``_Endpoint`` in longalign.config) and the key reader (longalign.secrets)
are shared by all three users.
"""

from longalign.endpoints.client import Client, EndpointStopped, host_of
from longalign.endpoints.failures import EndpointFailed, check_failures
from longalign.endpoints.journal import Journal, journal_name, request_key, through_journal
from longalign.endpoints.reply import Reply, Usage
from longalign.endpoints.retry import RetryPolicy, parse_retry_after

__all__ = ["Client", "EndpointStopped", "EndpointFailed", "Journal", "Reply", "RetryPolicy", "Usage",
           "check_failures", "host_of", "journal_name", "parse_retry_after", "request_key", "through_journal"]
