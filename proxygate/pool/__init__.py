"""Account records and the pool directory: loading, validation, atomic 0600 writes, watching."""

from proxygate.pool.files import InvalidFile, PoolSnapshot, load_pool
from proxygate.pool.records import Account, InvalidAccount, Kind, mask, parse_account

__all__ = [
    "Account",
    "InvalidAccount",
    "InvalidFile",
    "Kind",
    "PoolSnapshot",
    "load_pool",
    "mask",
    "parse_account",
]
