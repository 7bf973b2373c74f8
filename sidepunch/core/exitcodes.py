"""Exit statuses shared by the master and its worker processes.

Must not import: anything of sidepunch's above core (client, server, api, admin).
"""
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CRASH = 1
    USAGE = 2          # bad flags or settings (argparse's status)
    BOOT_ERROR = 3     # a worker could not import the app: restarting would only fail again
