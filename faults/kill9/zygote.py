"""A fast restart for the campaign: one process that has imported the daemon
forks a fresh daemon per request, so a restart costs the daemon's start, not
Python's imports (about 1.2 s on the reference machine).

Protocol on stdin/stdout, one JSON line each way:
`{"argv": [...], "env": {...}, "log": "path"}` in, `{"pid": N}` out. The child
leads a process group of its own (the campaign kills the group, as systemd
kills a unit's cgroup) and runs `edge-gateway` with `argv`. The zygote starts
no threads, so forking it is safe; its children are reaped by the kernel
(SIGCHLD ignored), and the campaign watches them with pidfds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

# The imports a restart would otherwise pay for, done once here.
import edge.gateway
import edge.mqtt.occupancy
import edge.ops.daemon
import edge.site.importer
import edge.sync.service
from edge import faultpoints
from edge.ops import cli

# The gateway imports these only when it starts them: without them here every
# life paid about 0.18 s (measured alone) importing requests and the sync service.
PRELOADED = (
    edge.gateway,
    edge.ops.daemon,
    edge.mqtt.occupancy,
    edge.site.importer,
    edge.sync.service,
)


def _child(argv: list[str], env: dict[str, str], log: str) -> None:
    os.setpgid(0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the daemon waits for its own children
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update(env)
    faultpoints.reload()
    code = 1
    try:
        code = cli.main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request["argv"], request["env"], request["log"])
        # Both sides set the group, so it exists before the campaign can kill it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        print(json.dumps({"pid": pid}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
