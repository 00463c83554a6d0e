"""The demo Envoy's bootstrap (v3 API), shaped like an Istio sidecar's moving parts.

- admin on a unix socket, polled by the pilot-agent stand-in (as pilot-agent checks
  Envoy's readiness and scrapes its stats);
- an inbound listener routing to ``upstream``, a STRICT_DNS cluster re-resolved through
  ``dnsmasq`` every ``dns_refresh`` (an Istio ServiceEntry with ``resolution: DNS``);
- a health listener on 15021 answering ``/healthz/ready`` itself, as the sidecar's
  readiness port does for kubelet;
- a file access log, so Envoy's ``AccessLogFlush`` thread runs;
- a short stats flush interval, so the main thread fans out to the workers;
- with ``xds_socket``, clusters over REST xDS from the pilot-agent stand-in on a unix
  socket (``xds.py``), as Istio's Envoy gets its configuration from pilot-agent;
- for the scenarios: a shared (not ``reuse_port``) inbound listener, a Lua filter that
  spins on some requests, several access loggers that log a request header.

Written as JSON (``to_json``), the format Istio writes its bootstrap in, which is also
what the collector reads to find the admin address.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, List, Optional

from .settings import AccessLog, LuaStall

HEALTH_PORT = 15021
INBOUND_PORT = 15006
UPSTREAM_PORT = 8080
UPSTREAM_HOST = "upstream.demo.offwake"
#: The request header the load pads, and a verbose access-log format logs.
PAD_HEADER = "x-offwake-pad"
XDS_CLUSTER = "xds-grpc"  # the name Istio gives the cluster to pilot-agent's xDS socket
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class EnvoyConfig:
    admin_socket: str
    access_log: str
    dns_ip: str
    dns_port: int = 53
    upstream_port: int = UPSTREAM_PORT
    inbound_port: int = INBOUND_PORT
    health_port: int = HEALTH_PORT
    dns_refresh_ms: int = 100
    stats_flush_ms: int = 1000
    #: pilot-agent's xDS socket (None: static configuration only) and Envoy's poll interval.
    xds_socket: Optional[str] = None
    xds_refresh_ms: int = 500
    reuse_port: bool = True
    lua_stall: Optional[LuaStall] = None
    access_logging: AccessLog = AccessLog()

    def bootstrap(self) -> dict:
        config: dict = {
            "node": {"id": "sidecar~10.0.0.1~demo-app.demo~demo.svc.cluster.local",
                     "cluster": "demo-app.demo"},
            "admin": {"address": {"pipe": {"path": self.admin_socket, "mode": 0o600}}},
            "stats_flush_interval": f"{self.stats_flush_ms / 1000:g}s",
            "static_resources": {
                "listeners": [self._inbound(), self._health()],
                "clusters": [self._upstream()],
            },
        }
        if self.xds_socket:
            config["static_resources"]["clusters"].append({
                "name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"pipe": {"path": self.xds_socket}}}}]}]},
            })
            config["dynamic_resources"] = {"cds_config": {
                "resource_api_version": "V3",
                "api_config_source": {
                    "api_type": "REST", "transport_api_version": "V3",
                    "cluster_names": [XDS_CLUSTER],
                    "refresh_delay": f"{self.xds_refresh_ms / 1000:g}s",
                    "request_timeout": "1s",
                },
            }}
        return config

    def _inbound(self) -> dict:
        listener: dict = {
            "name": "inbound",
            "address": _addr("0.0.0.0", self.inbound_port),
            "filter_chains": [{"filters": [_hcm(
                "inbound_http",
                routes=[{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                access_log=self._access_logs(),
                filters=[_lua(self.lua_stall)] if self.lua_stall else [],
            )]}],
        }
        if not self.reuse_port:
            listener["enable_reuse_port"] = False  # one socket all workers wait on
        return listener

    def _access_logs(self) -> List[dict]:
        settings = self.access_logging
        file_log: dict = {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": self.access_log,
        }
        if settings.log_headers:
            file_log["log_format"] = {"text_format_source": {"inline_string": (
                '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
                '%BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(USER-AGENT)%" '
                f'"%REQ(X-REQUEST-ID)%" "%UPSTREAM_HOST%" "%REQ({PAD_HEADER.upper()})%"\n')}}
        return [{"name": "envoy.access_loggers.file", "typed_config": dict(file_log)}
                for _ in range(max(1, settings.loggers))]

    def _health(self) -> dict:
        return {
            "name": "health",
            "address": _addr("0.0.0.0", self.health_port),
            "filter_chains": [{"filters": [_hcm(
                "health",
                routes=[{"match": {"prefix": "/healthz/ready"},
                         "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
            )]}],
        }

    def _upstream(self) -> dict:
        dns_cluster = {
            "@type": "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster",
            "dns_refresh_rate": f"{self.dns_refresh_ms / 1000:g}s",
            "respect_dns_ttl": False,
            "dns_lookup_family": "V4_ONLY",
            "typed_dns_resolver_config": {
                "name": "envoy.network.dns_resolver.cares",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
                    "resolvers": [_addr(self.dns_ip, self.dns_port)],
                    "use_resolvers_as_fallback": False,
                    "dns_resolver_options": {"no_default_search_domain": True},
                },
            },
        }
        return {
            "name": "upstream",
            # STRICT_DNS in its current (extension) form.
            "cluster_type": {"name": "envoy.cluster.dns", "typed_config": dns_cluster},
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "upstream",
                "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": _addr(UPSTREAM_HOST, self.upstream_port)}},
                ]}],
            },
        }

    def to_yaml(self) -> str:
        return to_yaml(self.bootstrap())

    def to_json(self) -> str:
        return json.dumps(self.bootstrap(), indent=1)


def _addr(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _lua(stall: LuaStall) -> dict:
    """A Lua filter spinning ``spin_ms`` on a worker's first request in each second of the
    clock divisible by ``every_s`` (each worker has its own Lua state, so ``last`` is per
    worker). ``os.clock`` is the process's CPU time: Envoy is pinned to one CPU, so the
    spin takes at least ``spin_ms`` of the clock."""
    code = (
        "local last = -1\n"
        "function envoy_on_request(handle)\n"
        "  local now = os.time()\n"
        f"  if now % {max(1, stall.every_s)} == 0 and now ~= last then\n"
        "    last = now\n"
        f"    local stop = os.clock() + {stall.spin_ms / 1000:g}\n"
        "    while os.clock() < stop do end\n"
        "  end\n"
        "end\n"
    )
    return {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": code},
    }}


def _hcm(stat_prefix: str, routes: List[dict], access_log: Optional[List[dict]] = None,
         filters: Optional[List[dict]] = None) -> dict:
    config: dict = {
        "@type": "type.googleapis.com/"
                 "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"virtual_hosts": [{"name": stat_prefix, "domains": ["*"],
                                            "routes": routes}]},
        "http_filters": [*(filters or []), {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            },
        }],
    }
    if access_log:
        config["access_log"] = access_log
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (scalars quoted as JSON strings)."""
    pad = "  " * indent
    lines: List[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_key(key)}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{_key(key)}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1)
                lines.append(f"{pad}- {body.lstrip()}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return "\n".join(lines)


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)
