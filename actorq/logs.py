"""Logging set-up shared by every service process."""

from __future__ import annotations

import logging
import os


def setup(service: str) -> logging.Logger:
    """One line per record, tagged with the service; level from ACTORQ_LOG_LEVEL."""
    level = os.environ.get("ACTORQ_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    return logging.getLogger(f"actorq.{service}")
