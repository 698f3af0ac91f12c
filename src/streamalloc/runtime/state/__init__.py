"""Local state: Store -> StorePartition -> PartitionTransaction, in memory or in RocksDB.

No Kafka here. The runtime restores a partition from its changelog (`apply_changelog`,
`write_checkpoint`), processes through transactions (`begin`), and after each Kafka
commit flushes them: the data batch first, then the checkpoint. Not thread-safe: a
store and its partitions belong to the one worker thread that uses them.
"""

from streamalloc.runtime.state.base import PartitionStatus, Store, StorePartition
from streamalloc.runtime.state.kept import Kept, KeptByPartition
from streamalloc.runtime.state.keys import decode_key, encode_key, prefix_of, prefix_upper_bound
from streamalloc.runtime.state.memory import InMemoryStore, InMemoryStorePartition
from streamalloc.runtime.state.rocksdb import RocksDBStore, RocksDBStorePartition, rocksdb_options
from streamalloc.runtime.state.transaction import PartitionTransaction, TransactionStatus

__all__ = [
    "InMemoryStore",
    "InMemoryStorePartition",
    "Kept",
    "KeptByPartition",
    "PartitionStatus",
    "PartitionTransaction",
    "RocksDBStore",
    "RocksDBStorePartition",
    "Store",
    "StorePartition",
    "TransactionStatus",
    "decode_key",
    "encode_key",
    "prefix_of",
    "prefix_upper_bound",
    "rocksdb_options",
]
