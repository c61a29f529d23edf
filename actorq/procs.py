"""Transitional alias: ``free_port`` moved to ``commands.procs``.

Only for tests/redis_server.py and tests/test_learner_priorities.py, which import it
from here; delete this file once they take it from ``conftest`` or ``commands.procs``.
"""

from commands.procs import free_port

__all__ = ["free_port"]
