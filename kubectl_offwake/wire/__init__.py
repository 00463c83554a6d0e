"""The versioned JSON-lines stream from collector to client (DESIGN.md §3.2).

Standard library only: the collector imports this under the node's system Python.
"""

from .schema import RECORD_TYPES, SCHEMA_VERSION, WireError
from .reader import ReadResult, StreamDecoder, iter_lines, iter_records, open_input, read_records
from .writer import WireWriter

__all__ = [
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "ReadResult",
    "WireError",
    "StreamDecoder",
    "WireWriter",
    "iter_lines",
    "iter_records",
    "open_input",
    "read_records",
]
