"""The versioned JSON-lines stream from collector to client (docs/design.md §3.2).

Standard library only: the collector imports this under the node's system Python.
"""

from .reader import ReadResult, StreamDecoder, iter_records, read_records
from .schema import RECORD_TYPES, SCHEMA_VERSION, WireError
from .writer import WireWriter

__all__ = [
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "ReadResult",
    "WireError",
    "StreamDecoder",
    "WireWriter",
    "iter_records",
    "read_records",
]
