"""A fresh token for every ``actorq train``, so that local runs are authenticated too.

Loopback ports are open to every user and process of the machine: without a
token any of them could publish weights or insert transitions into a run. The
launcher therefore makes a random token per run (unless the user set one of
the ``ACTORQ_TOKEN*`` variables: then theirs is used, as before), writes it to a
file only this user can read (a private temporary folder, mode 0600), and
hands its services ``ACTORQ_TOKEN_FILE``; its own channels present it too.
The token itself is never on a command line, in any process's environment (only
the file's path is), in config.yaml, summary.json or a log; the file is removed
when the run ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from actorq import auth

FILE_VAR = auth.TOKEN_ENV + auth.FILE_SUFFIX


class RunToken:
    """The run's token file, or nothing when the user brings their own tokens."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._dir: Path | None = None
        # What the services and the launcher's channels need added to their environment.
        self.env: dict[str, str] = {}
        if any(environ.get(var) for var in auth.ENV_VARS):
            return  # the user's own token(s) reach the services through the environment
        self._dir = Path(tempfile.mkdtemp(prefix="actorq-run-"))  # mode 0700
        path = self._dir / "token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        self.env = {FILE_VAR: str(path)}

    @property
    def generated(self) -> bool:
        """Whether this run made its own token (False: the user's tokens are used)."""
        return self._dir is not None

    def remove(self) -> None:
        """Delete the token file (after every service has stopped); idempotent."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
