"""Loaded by a test daemon (PYTHONPATH): the box's sandbox without netlink, as under
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6, where listing interfaces fails."""

import errno
import os
from typing import NoReturn

import psutil


def _no_netlink() -> NoReturn:
    raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))


psutil.net_if_addrs = _no_netlink
