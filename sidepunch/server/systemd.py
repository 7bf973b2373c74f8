"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET, and the watchdog interval.

Active only when systemd set NOTIFY_SOCKET (a path, or an abstract socket starting with '@'). The master
sends READY=1 once every worker fetches, STATUS= lines, WATCHDOG=1 while its workers heartbeat,
RELOADING=1/READY=1 around a HUP and STOPPING=1 on shutdown.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger("sidepunch.systemd")


class Notifier:
    def __init__(self, environ: Mapping[str, str], pid: int | None = None) -> None:
        path = environ.get("NOTIFY_SOCKET") or ""
        self._address = "\0" + path[1:] if path.startswith("@") else path
        pid = os.getpid() if pid is None else pid
        usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or (watchdog_pid.isdigit() and int(watchdog_pid) == pid)
        #: Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as systemd recommends), or None.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = 0.0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> bool:
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode())
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), exc)
                self._warned = True
            return False

    def watchdog_due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval

    def seconds_to_next_ping(self, now: float | None = None) -> float:
        if self.watchdog_interval is None:
            return float("inf")
        now = time.monotonic() if now is None else now
        return max(0.0, self._last_ping + self.watchdog_interval - now)

    def ping(self, now: float | None = None) -> None:
        self._last_ping = time.monotonic() if now is None else now
        self.notify("WATCHDOG=1")
