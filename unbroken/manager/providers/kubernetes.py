"""The Kubernetes provider: one Pod per node from a template, through the official async
client (kubernetes_asyncio).

Pods are named `unbroken-{group}-{role}-{random}` and labelled
`app.kubernetes.io/managed-by=unbroken-manager`, `unbroken.io/group`, `unbroken.io/role`;
the node id is the Pod name (given to the node as UNBROKEN_NODE_ID, with UNBROKEN_ROLE
and UNBROKEN_GROUP; the template's container turns them into arguments). The node's
address is the Pod's IP. Stopping with a drain deletes the Pod with a grace period of
the drain deadline: the kubelet sends SIGTERM, the node drains (no new sessions, clients
told to go to the manager) and exits when empty, or is killed at the deadline; stopping
at once deletes with a grace period of 0.

Tested against an API stand-in (kmock's Kubernetes emulator), not a real cluster.
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from ..model import NodeRole
from .base import NodeProvider, ProvidedNode, ProviderError, ProviderState

__all__ = ["KubernetesProvider", "MANAGED_BY", "load_template"]

log = logging.getLogger("unbroken.manager.providers.kubernetes")

MANAGED_BY = "unbroken-manager"
LABEL_GROUP = "unbroken.io/group"
LABEL_ROLE = "unbroken.io/role"
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def load_template(path: str) -> dict[str, Any]:
    """A Pod manifest (YAML or JSON) to start nodes from."""
    import yaml

    with open(path, encoding="utf-8") as f:
        template = yaml.safe_load(f)
    if not isinstance(template, dict) or template.get("kind", "Pod") != "Pod":
        raise ValueError(f"{path}: a Pod manifest is expected")
    if not template.get("spec", {}).get("containers"):
        raise ValueError(f"{path}: the Pod has no containers")
    return template


def _state(pod: dict[str, Any]) -> ProviderState:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return ProviderState.STOPPING
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    if phase == "Running":
        return ProviderState.RUNNING
    if phase in ("Succeeded", "Failed"):
        return ProviderState.EXITED
    return ProviderState.STARTING


class KubernetesProvider(NodeProvider):
    """Owns an API client for one namespace and the Pod template."""

    name = "kubernetes"

    def __init__(self, namespace: str, template: dict[str, Any], *, node_port: int = 8080,
                 api_client: k8s.ApiClient | None = None, kubeconfig: str = "") -> None:
        self.namespace = namespace
        self.template = template
        self.node_port = node_port
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self._own_client = api_client is None
        self._core: k8s.CoreV1Api | None = None if api_client is None else k8s.CoreV1Api(api_client)

    async def start(self) -> None:
        if self._api_client is None:
            if self._kubeconfig:
                await k8s_config.load_kube_config(config_file=self._kubeconfig)
            else:
                k8s_config.load_incluster_config()
            self._api_client = k8s.ApiClient()
            self._core = k8s.CoreV1Api(self._api_client)

    @property
    def core(self) -> k8s.CoreV1Api:
        if self._core is None:
            raise ProviderError("the Kubernetes provider is not started")
        return self._core

    def pod_manifest(self, name: str, group: str, role: NodeRole) -> dict[str, Any]:
        """The template with this node's name, labels and environment filled in."""
        pod = copy.deepcopy(self.template)
        pod["apiVersion"], pod["kind"] = "v1", "Pod"
        meta = pod.setdefault("metadata", {})
        meta.pop("generateName", None)
        meta["name"], meta["namespace"] = name, self.namespace
        meta.setdefault("labels", {}).update({"app.kubernetes.io/managed-by": MANAGED_BY,
                                              LABEL_GROUP: group, LABEL_ROLE: role.value})
        env = [{"name": "UNBROKEN_NODE_ID", "value": name},
               {"name": "UNBROKEN_ROLE", "value": role.value},
               {"name": "UNBROKEN_GROUP", "value": group}]
        for container in pod["spec"]["containers"]:
            names = {e["name"] for e in env}
            container["env"] = [e for e in container.get("env", []) if e.get("name") not in names] + env
        return pod

    def _provided(self, pod: dict[str, Any]) -> ProvidedNode:
        meta = pod.get("metadata", {})
        labels = meta.get("labels", {})
        ip = (pod.get("status") or {}).get("podIP") or ""
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        return ProvidedNode(meta["name"], labels.get(LABEL_GROUP, "default"),
                            NodeRole(labels.get(LABEL_ROLE, "edge")),
                            f"http://{ip}:{self.node_port}" if ip else "", _state(pod), f"pod {phase}")

    async def start_node(self, group: str, role: NodeRole) -> ProvidedNode:
        name = f"unbroken-{group}-{role.value}-{secrets.token_hex(3)}".lower()
        try:
            created = await self.core.create_namespaced_pod(self.namespace, self.pod_manifest(name, group, role),
                                                            _preload_content=False)
            pod = await created.json()
        except ApiException as e:
            raise ProviderError(f"creating pod {name}: {e.status} {e.reason}") from e
        log.info("created pod %s (%s/%s)", name, group, role.value)
        return self._provided(pod)

    async def stop_node(self, node_id: str, drain_s: float) -> None:
        grace = max(0, math.ceil(drain_s))
        try:
            await self.core.delete_namespaced_pod(node_id, self.namespace, grace_period_seconds=grace,
                                                  _preload_content=False)
        except ApiException as e:
            if e.status != 404:
                raise ProviderError(f"deleting pod {node_id}: {e.status} {e.reason}") from e
        log.info("deleting pod %s (grace %d s)", node_id, grace)

    async def list_nodes(self) -> list[ProvidedNode]:
        try:
            answer = await self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR,
                                                         _preload_content=False)
            pods = (await answer.json()).get("items", [])
        except ApiException as e:
            raise ProviderError(f"listing pods: {e.status} {e.reason}") from e
        nodes = [self._provided(pod) for pod in pods]
        return [n for n in nodes if n.state is not ProviderState.EXITED]

    async def close(self) -> None:
        if self._own_client and self._api_client is not None:
            await self._api_client.close()
