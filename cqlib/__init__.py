"""cqlib: cq's implementation, one module per concern; cq.py beside it is the command line.

cq.py's docstring is the map: which module owns what, in the order data flows, each importing
only those above it.  This file holds the version and imports nothing: every command imports
the package, and `hook run` and `worker status` must start lean.
"""

from __future__ import annotations

VERSION = "0.6.0"  # the code moved into cqlib: init replaces workers of 0.5.0
