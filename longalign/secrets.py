"""API keys for teacher, judge and answer endpoints: from a mounted secret file or an environment
variable, never from the command line or a config value, and never logged."""

from __future__ import annotations

import os
from pathlib import Path

from longalign.errors import UserError


def read_api_key(api_key_file: str | None, api_key_env: str | None, what: str) -> str | None:
    """The key from ``api_key_file`` (wins when set) or ``$api_key_env``; None when both are unset
    (an endpoint without authentication). ``what`` is the config section, e.g. ``generation.api``;
    a named but unset variable, an unreadable file or an empty key is a one-line UserError."""
    if api_key_file:
        path = Path(api_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise UserError(f"cannot read the API key file of {what} ({path}): {reason}") from None
        if not key:
            raise UserError(f"the API key file of {what} ({path}) is empty")
        return key
    if api_key_env:
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise UserError(f"no API key for {what}: set ${api_key_env} or {what}.api_key_file "
                            f"(or set {what}.api_key_env to null for an endpoint without auth)")
        return key
    return None
