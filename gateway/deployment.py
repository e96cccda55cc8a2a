"""The Ray Serve shell around :class:`gateway.service.ModelService`: one deployment, one ASGI ingress.

Why these options (Ray Serve 2.60, measured on 2 cores):

* ``max_ongoing_requests`` high (256): with Serve's default of 5, concurrency 32 makes the router back
  off (25 ms doubling to 0.5 s) while the replica idles; throughput collapses from ~120 to ~15 req/s.
  The handler is async and scores small requests on the loop, so a replica copes with many at once.
* Model updates never go through redeploys or ``reconfigure`` (both stall a replica while it loads):
  each replica polls the registry and swaps versions itself (see :mod:`gateway.models`).
* ``logging_config={"enable_access_log": False}``: the deployment's own access log off (``serve.start``'s
  logging config covers the proxy and controller, not replicas). Per request Ray Serve still formats the
  access-log message and creates the log record (``replica.py``, ``_record_errors_and_metrics``); the
  record is then dropped by a filter instead of being formatted and written. Ray's request metrics stay
  (they are cached and exported every ``RAY_SERVE_METRICS_EXPORT_INTERVAL_MS``). The other per-request
  knobs (``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``, a 1000-record log buffer, router on the main
  loop, GC freeze at startup) are what ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` sets, which ``esteira serve``
  sets with HAProxy mode (``gateway.launch.HAPROXY_ENV``).
* The GIL switch interval at 0.5 ms instead of 5 ms (``GatewayConfig.switch_interval_ms``): the replica's
  background threads (the inference log writer, the registry poll) hand the GIL back to the event loop
  sooner. The heavy parts of logging are kept small or out of the process anyway (rows built every
  0.5 s, whylogs in a child process: :mod:`gateway.inference_log`, :mod:`gateway.profiler`).
* The garbage collector's heap frozen once the replica has loaded everything (``gc.freeze()`` after the
  service's start): a full collection otherwise walks ~300,000 long-lived objects, 178 ms measured.
* ``OMP_NUM_THREADS=1`` per replica: HistGradientBoosting otherwise spreads every one-row call over all
  cores and oversubscribes them (313 -> 583 req/s measured in a bare app).
* ``health_check_period_s=1``: Serve's controller learns that a replica died (``kill -9``, out of memory)
  only when its pending health check fails, so a replacement starts up to one period after the death
  (``ray/serve/_private/deployment_state.py``, ``_check_active_health_check``; 2.4 s measured with a 5 s
  period, ``bench/bench_faults.py``). The check is one trivial actor call per replica per second. The
  dead replica's requests are not lost meanwhile when another replica is there to take them
  (``esteira serve`` runs two at least, and HAProxy sends a prediction that got no answer once more, to
  another replica: ``gateway.launch.HAPROXY_RETRY_ENV``).

The app is built in the replica (``__serve_build_asgi_app__``), after the constructor has built the
service from its config, so routes, service and config travel to replicas as one plain dict.
"""

from __future__ import annotations

import sys
from typing import Any

from ray import serve
from ray.serve import Application

from gateway.config import GatewayConfig

DEPLOYMENT_NAME = "esteira-gateway"
DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {
    "num_cpus": 0.5,
    "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", "WHYLOGS_NO_ANALYTICS": "1"}},
}


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=256, ray_actor_options=DEFAULT_ACTOR_OPTIONS,
                  health_check_period_s=1, graceful_shutdown_timeout_s=10,
                  logging_config={"enable_access_log": False})
@serve.ingress()
class Gateway:
    """One replica: a :class:`ModelService` (with its registry poll loop and log writer) behind FastAPI."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        from gateway.exposure import check_replica
        from gateway.service import ModelService

        gateway_config = GatewayConfig.model_validate(config or {})
        check_replica(gateway_config)  # off loopback without tokens: refuse to serve, whoever deployed it
        if gateway_config.switch_interval_ms:
            # The replica is our process: its background threads (log writer, whylogs, registry poll) must
            # hand the GIL back to the event loop sooner than Python's 5 ms, or requests queue behind them.
            sys.setswitchinterval(gateway_config.switch_interval_ms / 1000)
        self.service = ModelService.from_config(gateway_config, replica_id=replica_id())
        self.service.freeze_gc_after_start = True

    def __serve_build_asgi_app__(self) -> Any:
        from gateway.app import build_app

        return build_app(self.service)


def replica_id() -> str:
    """Ray Serve's id of the replica this runs in, ``<app>#<deployment>#<tag>`` (the tag is random per
    replica): the key of its row in the registry's ``gateway_replica`` table."""
    context = serve.get_replica_context()
    return f"{context.app_name}#{context.deployment}#{context.replica_tag}"


def build(args: dict[str, Any] | None = None) -> Application:
    """Application builder, for ``serve run gateway.deployment:build`` and ``serve deploy`` config files.

    ``args`` is a :class:`GatewayConfig` as a dict (``models``, ``database_url``, ``shadow_alias``...);
    replicas, autoscaling and actor options belong to the config file's ``deployments:`` section.
    """
    config = GatewayConfig.model_validate(args or {})
    return Gateway.bind(config.to_args())  # type: ignore[attr-defined]  # @serve.deployment adds .bind
