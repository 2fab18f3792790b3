"""The one Kubernetes API client of gpunuma: the agent, the operator, the CLI and ``kubectl gpunuma``.

Requests go by path, as JSON. Judged against the three maintained async clients (sizes measured in
fresh virtual environments, see docs/development.md):

- kubernetes_asyncio is generated like the ``kubernetes`` package, about as large, and slow to
  import; it would replace one heavy dependency with another.
- kr8s wraps every object in its own classes and pulls in eight more packages (python-box,
  cachetools, python-jsonpath, httpx-ws…) for features gpunuma does not use.
- lightkube is small, typed and maintained, but speaks httpx and returns typed models where the
  operator keeps three fields of each Node and Pod. gpunuma first kept only its kubeconfig
  loader; importing it (httpx, msgspec, its models) took 0.14 s of ``kubectl gpunuma``'s start,
  and it reads one file where kubectl merges a list.

So the client is gpunuma's own, in parts:

- :mod:`.kubeconfig` reads kubeconfigs by client-go's rules (tested against kubectl itself), and
  :mod:`.execplugin` runs their exec credential plugins by client-go's protocol;
- :mod:`.connection`: a :class:`Connection` says where the API server is and how to
  authenticate: the pod's service account, a kubeconfig context, or kopf's ``ConnectionInfo``
  (so that the operator's client and kopf see the same server);
- :mod:`.client`: :class:`KubeClient` sends JSON and returns JSON (merge and JSON patches), counts
  requests for the probes, logs in again after a 401, and raises :class:`ApiError` for every
  failure, status 0 when no usable answer came back (:mod:`.errors`: which are worth a retry);
- :mod:`.transport`: what carries the bytes: aiohttp, which every long-running gpunuma process
  already carries (kopf, the webhook, /metrics), or the standard library for short commands.

The same client works against a real API server and against kmock in the tests.
"""

from gpunuma.kubeapi.client import JSON_PATCH, MERGE_PATCH, KubeClient
from gpunuma.kubeapi.connection import Connection, tls_context
from gpunuma.kubeapi.errors import ApiError
from gpunuma.kubeapi.transport import StdlibTransport

__all__ = ["JSON_PATCH", "MERGE_PATCH", "ApiError", "Connection", "KubeClient", "StdlibTransport",
           "tls_context"]
