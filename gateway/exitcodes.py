"""The gateway's process exit codes, in one place the CLI, the daemon and the updater share.

Imports nothing: any module may use it without a cycle. ``EXIT_RESTART_FOR_UPDATE`` is what
the systemd unit lists in ``RestartForceExitStatus=``: keep the two in step.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
EXIT_USAGE: Final = 2
# An update was installed (or rolled back): exit so systemd starts the version now current.
EXIT_RESTART_FOR_UPDATE: Final = 75
