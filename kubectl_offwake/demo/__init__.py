"""``kubectl offwake demo``: a small mesh node around a real Envoy, traced for a few seconds.

Modules, one job each: ``scenarios`` (the table of conditions ``--scenario`` sets up) and
``settings`` (every knob of the node), ``mesh`` (the node as a context manager, also used
by the tests), ``network`` (namespace and veth), ``cgroup`` (the cgroup that holds every
process), ``cpulimit`` (a CFS quota on Envoy's cgroup), ``processes`` (start and stop by
PID), ``binaries`` (find Envoy, dnsmasq, wrk), ``envoy_config`` (Envoy's bootstrap),
``loadgen`` (wrk's pacing), the stand-ins ``agent`` (pilot-agent, serving ``xds``),
``prober`` (kubelet), ``upstream`` (the app) and ``hog`` (a noisy neighbour), ``stale``
(what a killed demo left) and ``run`` (set up, trace, tear down).
"""
