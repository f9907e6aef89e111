"""When requests that failed after retries fail the run: one rule for teacher, answerer and judge.

A run needs ``attempted`` requests (answered by the endpoint, served from the journal, or given up).
It fails when the share given up exceeds the endpoint's ``max_failure_rate`` (default 10%), or when
requests were needed and none succeeded, with one line naming the endpoint's host, the counts and
the reasons. ``allow_partial: true`` lets a run over the limit finish (never one with no success);
the report then says ``partial`` and the stage prints it in its stats and summary.
"""

from __future__ import annotations

from typing import Any

from longalign.endpoints.reply import Usage
from longalign.errors import UserError


class EndpointFailed(UserError):
    """Too many requests to an endpoint failed after retries."""


def reasons_text(failures: dict) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0])))


def check_failures(usage: Usage, config, *, role: str, host: str, what: str, kept: str = "") -> dict[str, Any]:
    """The failure report of one endpoint (for stats); raises EndpointFailed when the run must fail.
    ``kept`` says where the successful replies are kept (the journal), for the message."""
    attempted, failed = usage.attempted, usage.failed
    succeeded = attempted - failed
    rate = failed / attempted if attempted else 0.0
    limit = config.max_failure_rate
    over = rate > limit
    report = {"host": host, "attempted": attempted, "failed": failed, "rate": round(rate, 4),
              "limit": limit, "reasons": dict(sorted(usage.failures.items())),
              "partial": bool(failed), "over_limit": over}
    if not failed:
        return report
    if succeeded == 0 or (over and not config.allow_partial):
        why = "no request succeeded" if succeeded == 0 else f"over the {limit:.0%} limit"
        hint = "" if succeeded == 0 else f", or set {what}.allow_partial=true to keep partial data"
        raise EndpointFailed(
            f"the {role} endpoint {host} failed {failed} of {attempted} requests after retries "
            f"({reasons_text(usage.failures)}): {why}; {succeeded} successful replies are kept"
            f"{' in ' + kept if kept else ''} and a rerun sends only the failed requests{hint}")
    return report
