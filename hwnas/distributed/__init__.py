"""Scale out on Ray: measurement campaigns over many devices, parallel search evaluations.

Ray is the optional ``ray`` extra (``pip install 'hwnas[ray]'``); nothing here
imports it until a function needs it, and a missing ray raises
:class:`~hwnas.errors.MissingExtraError` naming the extra. The local paths
(:func:`hwnas.campaigns.run_campaign`, :meth:`Searcher.run`) never need it.

* :func:`run_campaign_ray` / :class:`RayCampaign` - one actor per device,
  placed by the device's custom resource; the driver writes the store
  (:mod:`hwnas.distributed.campaign`).
* :func:`run_search_ray` / :class:`RayExecutor` - :meth:`Searcher.run` with its
  candidate evaluations on Ray tasks, same history as a local run; and
  :func:`run_search_ray_async`, faster for evolution but not reproducible
  (:mod:`hwnas.distributed.search`).
* :func:`connect` / :func:`device_resource` - the cluster and the resource
  names devices are placed by (:mod:`hwnas.distributed.cluster`).

CLI: ``hwnas sample ... --ray [ADDRESS] --device adb:A,adb:B`` and
``hwnas search ... --ray [ADDRESS]``.
"""

from hwnas.distributed.campaign import (
    DeviceSpec,
    RayCampaign,
    RayCampaignSummary,
    as_specs,
    run_campaign_ray,
)
from hwnas.distributed.cluster import Cluster, cluster, connect, device_resource, ray_module
from hwnas.distributed.search import (
    RayExecutor,
    fanout_note,
    run_search_ray,
    run_search_ray_async,
    task_resources,
)
from hwnas.searchers.loop import async_searchers

__all__ = [
    "async_searchers",
    "Cluster",
    "DeviceSpec",
    "RayCampaign",
    "RayCampaignSummary",
    "RayExecutor",
    "as_specs",
    "cluster",
    "connect",
    "device_resource",
    "fanout_note",
    "ray_module",
    "run_campaign_ray",
    "run_search_ray",
    "run_search_ray_async",
    "task_resources",
]
