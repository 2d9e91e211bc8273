"""The Kubernetes provider's real client calls (kubernetes_asyncio) against kmock's
Kubernetes API emulator: Pods created from the template, listed by label, addressed by
their IP, deleted with the drain deadline as grace period. No real cluster here."""

from __future__ import annotations

import os

import kmock
import pytest
from kubernetes_asyncio import client as k8s

from unbroken.manager.model import NodeRole
from unbroken.manager.providers import ProviderState
from unbroken.manager.providers.kubernetes import MANAGED_BY, KubernetesProvider, load_template

pytestmark = pytest.mark.timeout(30)

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "kubernetes", "node-template.yaml")


@pytest.fixture
async def api():
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        configuration = k8s.Configuration(host=str(server.url).rstrip("/"))
        async with k8s.ApiClient(configuration) as client:
            yield emulator, client


async def test_start_lists_and_stops_pods(api):
    emulator, client = api
    provider = KubernetesProvider("media", load_template(TEMPLATE), api_client=client)
    await provider.start()
    started = await provider.start_node("eu", NodeRole.EDGE)
    assert started.node_id.startswith("unbroken-eu-edge-") and started.state is ProviderState.STARTING
    creates = [r for r in list(emulator) if r.method == "POST"]
    assert len(creates) == 1 and "/api/v1/namespaces/media/pods" in str(creates[0].url)
    body = creates[0].data
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == MANAGED_BY
    env = {e["name"]: e.get("value") for e in body["spec"]["containers"][0]["env"]}
    assert env["UNBROKEN_NODE_ID"] == started.node_id and env["UNBROKEN_ROLE"] == "edge"
    assert "POD_IP" in env  # the template's own variables are kept

    listed = await provider.list_nodes()
    assert [n.node_id for n in listed] == [started.node_id] and listed[0].url == ""

    # the Pod gets scheduled: its IP is the node's address
    # (the kubelet's part, played through the same API)
    await k8s.CoreV1Api(client).patch_namespaced_pod_status(
        started.node_id, "media", {"status": {"phase": "Running", "podIP": "10.1.2.3"}})
    listed = await provider.list_nodes()
    assert listed[0].state is ProviderState.RUNNING and listed[0].url == "http://10.1.2.3:8080"
    assert listed[0].group == "eu" and listed[0].role is NodeRole.EDGE

    await provider.stop_node(started.node_id, drain_s=7.2)
    deletes = [r for r in list(emulator) if r.method == "DELETE"]
    assert len(deletes) == 1 and started.node_id in str(deletes[0].url)
    assert deletes[0].params.get("gracePeriodSeconds") == "8"
    assert await provider.list_nodes() == []
    await provider.close()


async def test_stop_at_once_and_an_unknown_pod(api):
    emulator, client = api
    provider = KubernetesProvider("media", load_template(TEMPLATE), api_client=client)
    await provider.start()
    node = await provider.start_node("default", NodeRole.ORIGIN)
    await provider.stop_node(node.node_id, drain_s=0)
    deletes = [r for r in list(emulator) if r.method == "DELETE"]
    assert deletes[0].params.get("gracePeriodSeconds") == "0"
    await provider.stop_node("unbroken-gone", drain_s=0)  # already gone: not an error


def test_template_must_be_a_pod(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(ValueError):
        load_template(str(bad))
