"""Logging to stderr only (stdout is the stdio protocol), with every configured secret masked."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable


class RedactSecrets(logging.Filter):
    """Masks secret values in the final message, whatever logger or library produced it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        text = message
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        if record.exc_info and record.exc_info[1] is not None:
            # Formatted tracebacks are built later from exc_info; drop them when they could hold a secret.
            rendered = logging.Formatter().formatException(record.exc_info)
            if any(s in rendered for s in self._secrets):
                record.exc_info = None
                record.exc_text = None
                text += " [traceback withheld: it contained a secret]"
        if text != message:
            record.msg, record.args = text, None
        return True


def configure_logging(secrets: Iterable[str], level: str | None = None) -> None:
    level_name = (level or os.environ.get("MEDIAMUX_LOG_LEVEL") or "WARNING").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level_name)
    # Request lines from the HTTP library add noise and, with query strings, risk; ours are enough.
    for noisy in ("httpx2", "httpx", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
