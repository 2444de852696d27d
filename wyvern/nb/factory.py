"""Open the store a Settings object names."""

from __future__ import annotations

from wyvern.config import Settings
from wyvern.nb.store import Store


def open_store(settings: Settings) -> Store:
    if settings.store == "memory":
        from wyvern.nb.memory import MemoryStore

        return MemoryStore()
    if settings.store == "etcd":
        from wyvern.nb.etcd import EtcdStore

        return EtcdStore(list(settings.etcd_endpoints), max_txn_ops=settings.etcd_max_txn_ops)
    from wyvern.nb.sqlite import SqliteStore

    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(str(settings.database_path))
