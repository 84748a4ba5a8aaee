"""A real two-node Ray cluster on this machine, for the tests of `index` and `ask` on a
cluster (tests/ingest/test_cluster.py, tests/asking/test_ask_cluster.py).

The head runs with no CPUs (so it runs no embedding or generation, and Ray's reads on it
ask for none); the second node has the CPUs and an `embed_node` resource. Where the
kernel allows it, the second node runs in its own mount namespace with a tmpfs over the
input folder (`docs`), so it cannot see the input, as a cluster node could not see a
laptop's files: files written there later are invisible to it too. The nodes are started
with `ray start --block` in their own process groups and temp dirs, and stopped by those
process ids (never `ray stop`, which would stop every Ray on the machine). Everything
that talks to the cluster runs in a subprocess: the pytest process may hold its own
local Ray. Started once per session, on the first test that asks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import ROOT, free_port, write_corpus

# Ray 2.60's driver logs this for every Ray Data actor pool (ray-project/ray#57733): Ray's
# own notice, not a run's error, and the only other line a failing run may print.
RAY_NOTICE = "has constructor arguments in the object store and max_restarts > 0"

RAY = str(Path(sys.executable).with_name("ray"))


def can_hide(folder: Path) -> bool:
    """Whether a process may get its own mount namespace with a tmpfs over `folder`."""
    if not shutil.which("unshare"):
        return False
    done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {folder} && test ! -e {folder}/journal.txt"], capture_output=True)
    return done.returncode == 0


def node_env() -> dict[str, str]:
    """The nodes' environment: no HF_* or RAGBATCH_* (the driver must send its own), and
    ragbatch importable by their workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "RAGBATCH_", "RAY_ADDRESS"))}
    return {**env, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}


def driver_env(address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAGBATCH_STORE"}
    return {**env, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "RAGBATCH_EMBED_RESOURCES": '{"embed_node": 1}'}


def stop(process: subprocess.Popen) -> None:
    """Stop one node: its `ray start --block` process group, by that process's id."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group outlived `ray start`
    except ProcessLookupError:
        pass
    process.wait()


WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
for _ in range(240):
    if any(n["Alive"] and n["Resources"].get("embed_node") for n in ray.nodes()):
        sys.exit(0)
    time.sleep(0.5)
sys.exit("the second node never joined")
"""


@pytest.fixture(scope="session")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="rbc", dir="/tmp"))  # short: Ray's socket paths
    docs = write_corpus(base / "in")
    hidden = can_hide(docs)
    address = f"127.0.0.1:{free_port()}"
    head_cmd = [RAY, "start", "--head", "--num-cpus=0", f"--port={address.split(':')[1]}", "--node-ip-address=127.0.0.1"]
    head_cmd += [f"--temp-dir={base / 'h'}", "--include-dashboard=false", "--disable-usage-stats", "--block"]
    worker_cmd = [RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.2", "--num-cpus=2", '--resources={"embed_node": 1}']
    worker_cmd += [f"--temp-dir={base / 'w'}", "--disable-usage-stats", "--block"]
    if hidden:
        worker_cmd = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs none {docs} && exec "$@"', "node", *worker_cmd]
    nodes = []
    try:
        log = open(base / "nodes.log", "w")  # noqa: SIM115 - closed below
        nodes.append(subprocess.Popen(head_cmd, env=node_env(), stdout=log, stderr=log, start_new_session=True))
        waited = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES.replace("embed_node", "node:__internal_head__"), address], env=node_env(), capture_output=True, text=True
        )
        assert waited.returncode == 0, waited.stderr[-2000:]
        nodes.append(subprocess.Popen(worker_cmd, env=node_env(), stdout=log, stderr=log, start_new_session=True))
        waited = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, address], env=node_env(), capture_output=True, text=True)
        assert waited.returncode == 0, (base / "nodes.log").read_text()[-3000:] + waited.stderr[-2000:]
        yield {"address": address, "docs": docs, "hidden": hidden, "base": base}
    finally:
        for node in reversed(nodes):
            stop(node)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
