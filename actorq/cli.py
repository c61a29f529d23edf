"""Transitional alias of ``commands.cli`` (the ``actorq`` command moved there).

Only for the tests outside the commands' area that still run ``python -m actorq.cli``
(test_actor_service, test_learner_service, test_replay_service,
test_replay_redis_service, test_d4pg_learner); delete this file once they name
``commands.cli``. With actorq/procs.py and actorq/bench/replay.py, one of the three
transitional aliases that import a command from the floor.
"""

import sys

from commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
