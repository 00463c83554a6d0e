"""Pure analysis: classify every wakeup, aggregate, and draw findings from a Recording.

:func:`analyze` is the entry point (``Recording`` in, ``Report`` out). The pieces, each
with one job:

* ``frames``     -- frame names as the rules compare them (offsets, clone suffixes gone)
* ``rules``      -- the classifier's single ordered rule table
* ``classify``   -- applies the table to an edge: category, detail, cause, rule id
* ``roles``      -- Envoy thread roles, and which processes are Envoy
* ``naming``     -- display names of wakers, targets and preemptors
* ``aggregate``  -- sums by category, waker, thread; totals and shares
* ``findings``   -- plain-sentence findings with the numbers behind them, a package
                    with one module per family of problems
* ``model``, ``report``, ``categories`` -- the shared contracts
"""

from __future__ import annotations

from .analyze import analyze

__all__ = ["analyze"]
