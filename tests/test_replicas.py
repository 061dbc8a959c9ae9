"""One client, several replicas behind one name (issue 23, item 4): `--url dns://...` spreads its requests over
every address the name resolves to (gRPC's round_robin policy), and a replica that dies mid-batch loses nothing.

Real parts: two tritonservers on the tiny repository at 127.0.0.2 and 127.0.0.3 on the same port, as the pods of a
Kubernetes headless Service, and a real DNS server (dnslib) that gives one name both addresses; the client asks it
through gRPC's own resolver (`dns://DNS_SERVER/NAME:PORT`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest
import tritonclient.grpc as grpcclient
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from e2v_client import audio
from e2v_client.client import Emotion2vecClient
from e2v_client.outputs import FOLDER_PREFIX, RESULT_FILE
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import TritonServer, free_port

NAME = "e2vpods.test"
REPLICAS = ("127.0.0.2", "127.0.0.3")


class Pods(BaseResolver):
    """A headless Service's name: an A record for each replica in `addresses`."""

    def __init__(self, addresses):
        self.addresses = list(addresses)

    def resolve(self, request, handler):
        reply = request.reply()
        if str(request.q.qname).rstrip(".") == NAME and request.q.qtype == QTYPE.A:
            for address in self.addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


@contextlib.contextmanager
def named_replicas(tiny, tmp_path, pods: Pods):
    """(the client's URL, {address: server}): a replica on each of REPLICAS, one port, and a DNS server whose
    name gives the addresses `pods` holds (which a test may change)."""
    port = free_port()
    dns_port = free_port()
    dns = DNSServer(pods, port=dns_port, address="127.0.0.1", logger=DNSLogger("-request,-reply"))
    dns.start_thread()
    servers = {}
    try:
        for address in REPLICAS:
            log = tmp_path / f"triton-{address}.log"
            servers[address] = TritonServer(tiny.repository, host=address, grpc_port=port, log_file=log).start()
        yield f"dns://127.0.0.1:{dns_port}/{NAME}:{port}", servers
    finally:
        for server in servers.values():
            server.stop()
        dns.stop()


@pytest.fixture
def replicas(tiny, tmp_path):
    """Two replicas, both behind the name."""
    with named_replicas(tiny, tmp_path, Pods(REPLICAS)) as named:
        yield named


def ensemble_requests(server: TritonServer) -> int:
    """The requests the replica's ensembles have answered (Triton's own statistics): the public one and the bulk
    lane's, where e2v-client's batches go."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = [
            client.get_inference_statistics(model, as_json=True)
            for model in (contract.ENSEMBLE_MODEL, contract.BULK_ENSEMBLE_MODEL)
        ]
    return sum(int(s["model_stats"][0].get("inference_count", 0)) for s in stats)


def test_one_client_spreads_its_requests_over_every_replica_of_a_name(replicas):
    url, servers = replicas

    async def score_all():
        async with Emotion2vecClient(url) as client:
            limit = asyncio.Semaphore(4)

            async def one(seed):
                async with limit:
                    await client.score(speech_like(1.0, seed))

            await asyncio.gather(*(one(seed) for seed in range(40)))

    asyncio.run(score_all())
    deadline = time.monotonic() + 5  # Triton counts a request just after its response
    counts = {address: ensemble_requests(server) for address, server in servers.items()}
    while sum(counts.values()) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = {address: ensemble_requests(server) for address, server in servers.items()}
    print(f"40 requests through {url}: {counts}")
    assert sum(counts.values()) == 40
    assert all(abs(count / 40 - 0.5) <= 0.05 for count in counts.values()), counts  # within 10 % of even


def test_a_replica_killed_mid_batch_loses_nothing(replicas, tmp_path):
    url, servers = replicas
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(40):
        audio.write_wav(inputs / f"utt_{i:02d}.wav", audio.from_samples(speech_like(2.0 + (i % 4), i), 16000))
    out = tmp_path / "outputs"
    command = [sys.executable, "-m", "e2v_client.cli", "--url", url, "--quiet", "--concurrency", "1", "--output-dir",
               str(out), str(inputs)]  # fmt: skip
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while len(list(out.glob(f"{FOLDER_PREFIX}*"))) < 6 and batch.poll() is None:
        time.sleep(0.02)
    assert batch.poll() is None, "the batch ended before the replica could be killed"
    servers[REPLICAS[0]].kill()
    done_at_kill = len(list(out.glob(f"{FOLDER_PREFIX}*")))
    stdout, stderr = batch.communicate(timeout=300)
    assert batch.returncode == 0, stderr
    sources = [json.loads(p.read_text("utf-8"))["source_file"] for p in out.glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}")]
    assert len(sources) == len(set(sources)) == 40
    survivor = ensemble_requests(servers[REPLICAS[1]])
    print(f"{REPLICAS[0]} killed after {done_at_kill} folders; {REPLICAS[1]} answered {survivor} of 40; {stdout}")
    assert survivor >= 40 - done_at_kill - 1  # every request after the kill (and the one in flight at it)


def test_a_replica_added_to_the_name_mid_batch_gets_requests(tiny, tmp_path):
    """The name gives one replica, then two (a pod added by the autoscaler): the client's requests reach the
    new one once its channel has been replaced (every `reresolve_every` seconds; 30 s by default, 1 s here)."""
    pods = Pods(REPLICAS[:1])
    with named_replicas(tiny, tmp_path, pods) as (url, servers):

        async def score_for(client, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await client.score(speech_like(1.0, 0))

        async def batch():
            async with Emotion2vecClient(url, reresolve_every=1.0) as client:
                await score_for(client, 3.0)
                before = {address: ensemble_requests(server) for address, server in servers.items()}
                pods.addresses = list(REPLICAS)  # the new replica joins the name
                await score_for(client, 4.0)
                return before

        before = asyncio.run(batch())
        after = {address: ensemble_requests(server) for address, server in servers.items()}
    print(f"before the new replica joined: {before}; after: {after}")
    assert before[REPLICAS[0]] > 0 and before[REPLICAS[1]] == 0
    assert after[REPLICAS[1]] > 0.2 * (after[REPLICAS[0]] - before[REPLICAS[0]])
