"""The run pipeline: a collector's stream, from its first line to the saved recording.

One pipeline for every run (``local``, ``demo``, and each node of ``kubectl offwake
TARGET``), each module with one job:

* ``sink``      -- one stream's way in: seq dedup → wire decode → recording builder → live
                   display → recording file (and the client's own records)
* ``recfile``   -- the recording file, written and flushed as the stream commits
* ``interrupt`` -- Ctrl-C once: stop gracefully so the final flush arrives; twice: force
* ``local``     -- the collector as a subprocess of this machine, fed into a sink
* ``cluster``   -- a Kubernetes run: a sink per node, the fleet streaming into them,
                   then merged and per-pod reports
* ``paths``     -- where recordings and reports are written

Where the bytes come from is not this package's business: a local pipe (``local``) or a
pod's log followed through the API (:mod:`kubectl_offwake.k8s`, which never decodes).
"""
