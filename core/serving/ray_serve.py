"""The same server as a Ray Serve application: replicas spread over a Ray cluster, each loading the models once.

``ray_application(models, config, replicas=2)`` gives a ``ray.serve`` application whose ingress is
:func:`~.app.create_app` built on each replica (the models are loaded there, never pickled); ``flagstack serve --ray``
runs it. Autoscaling (``autoscaling_config``) and actor resources (``ray_actor_options``, e.g. ``{"num_cpus": 4}``)
are passed to ``serve.deployment`` as they are. Every answer carries ``X-Flagstack-Replica`` (the replica's id), so
a client can see the requests spread. Needs ``pip install 'flagstack[ray-serve]'`` (``ray[serve]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import ModelSpec, ServeConfig

REPLICA_HEADER = "X-Flagstack-Replica"
DEPLOYMENT_NAME = "flagstack"


def replica_app(models: Sequence[ModelSpec], config: ServeConfig | None) -> Any:
    """The FastAPI app of one replica (built on the replica, where Ray Serve calls this), its answers marked with the
    replica's id."""
    import torch
    from ray import serve

    from .app import create_app

    cpus = int(_replica_cpus())
    if cpus > 0:
        torch.set_num_threads(cpus)  # the CPUs Ray gave this replica, not every core of the machine
    app = create_app(models, config)
    app.state.flagstack.load()  # Ray Serve starts routing to a replica once this returns: load before that
    replica = serve.get_replica_context().replica_id.unique_id

    @app.middleware("http")
    async def mark(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers[REPLICA_HEADER] = replica
        return response

    return app


def _replica_cpus() -> float:
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    return float(resources.get("CPU", 0.0))


def ray_application(
    models: Sequence[ModelSpec],
    config: ServeConfig | None = None,
    replicas: int = 1,
    autoscaling_config: Mapping[str, Any] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
) -> Any:
    """A Ray Serve application serving ``models`` with ``replicas`` replicas (or ``autoscaling_config``'s range);
    run it with ``ray.serve.run(app)``. Models given as built objects (``ModelSpec.model``) cannot be sent to other
    processes: give their path and settings."""
    from ray import serve

    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas <= 0:
        raise ValueError(f"replicas must be a positive int, got {replicas!r}")
    built = [spec.name for spec in models if spec.model is not None]
    if built:
        raise ValueError(f"models {built} are built objects: a Ray replica loads its models itself, so give each a "
                         "path and settings (ModelSpec(name, kind, path, settings))")
    for spec in models:
        spec.checked_settings()  # a bad setting fails here, not in every replica
    options: dict[str, Any] = {"name": DEPLOYMENT_NAME}
    if autoscaling_config:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = replicas
    if ray_actor_options:
        options["ray_actor_options"] = dict(ray_actor_options)
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    served = list(models)

    def builder() -> Any:  # a function (not a partial: Ray Serve would take that for an ASGI app), run on each replica
        return replica_app(served, config)

    deployment: Any = serve.deployment(serve.ingress(builder)(), **options)
    return deployment.bind()


def serve_on_ray(application: Any, host: str, port: int, address: str | None = None) -> None:
    """Run ``application`` (from :func:`ray_application`) on Ray Serve at ``host``:``port`` until SIGINT / SIGTERM or
    :func:`~.server.stop_servers`, on the cluster at ``address`` (None: the one this process is connected to, else a
    local one started here and stopped at the end)."""
    import ray
    from ray import serve

    from .server import wait_until_stopped

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application, name=DEPLOYMENT_NAME, route_prefix="/")
        print(f"ray serve  ready on http://{host}:{port}", flush=True)
        wait_until_stopped()
    finally:
        try:
            serve.delete(DEPLOYMENT_NAME)
        finally:
            if started:
                serve.shutdown()
                ray.shutdown()
