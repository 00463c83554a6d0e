"""The only code that imports the kubernetes client: it talks to the API, nothing else.

One job per module (pure ones marked *, unit-tested on literal data):

- ``config``     kubeconfig / KUBECONFIG list / context / namespace / in-cluster, like kubectl
- ``api``        typed clients and the one translation of API errors into user sentences
- ``targets``*   what a TARGET means: forms, default container, native sidecars, refusals
- ``resolve``    TARGET → running containers, asking the API (pods, workloads, selectors)
- ``preflight``  SelfSubjectAccessReview per verb and resource, before anything is created
- ``image``*     which collector image a run uses (flag, environment, cluster, default) and why;
                 no kubernetes import (the release workflow reads the default from it)
- ``clusterimage`` the cluster's choice: ConfigMap offwake-config, read by runs and ``version``
- ``podspec``*   THE node pod and its ConfigMap (every security decision lives here, with the
                 zipapp's sha256 check the pod runs before the collector)
- ``diagnose``*  a collector pod's status → one sentence per way it fails
- ``logs``       following the collector's log as bytes, resuming on drops (whole lines
                 go to the run pipeline's sink, which decodes them)
- ``noderun``    one node's collector pod: create, watch, follow, stop, delete
- ``fleet``      all nodes at once, one thread each; stop and close from the caller's thread
- ``naming``*    host processes → ``ns/pod/container``, ``host: COMM``, ``kernel: COMM``
- ``session``    ``kubectl offwake TARGET`` up to the run: config, preflight, resolve,
                 ``--dry-run``, image choice (the run is ``kubectl_offwake.pipeline.cluster``)
- ``setup_objects``* / ``admin``  ``kubectl offwake setup`` and ``cleanup``
"""
