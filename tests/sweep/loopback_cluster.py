"""A Ray cluster of a head and one worker node on this machine, over loopback only, with the
worker unable to see the driver's results folder; a clbench sweep across it.

Run as the first process of its own network, mount and process namespaces (as root)::

    unshare --net --mount --pid --fork --mount-proc python tests/sweep/loopback_cluster.py WORK -- ARGS

The network namespace holds nothing but ``lo``, so every address Ray picks (the head's and worker's
node IP, the driver's) is 127.0.0.1 and no process can reach the machine's other interfaces. The
worker node is started in a mount namespace of its own with a tmpfs over ``WORK/hidden``, which
holds the driver's project folder (with an own module) and its ``--out``: what the worker makes
reaches the driver through Ray or not at all. When this script exits, the kernel ends every process
of its namespace, so the test stops exactly the Ray processes it started.

``ARGS``: clbench commands, each after a ``--`` (``run ... --executor ray --out WORK/hidden/out``,
``tune ...``), run one after the other in ``WORK/hidden/project`` with ``--address`` added.
``--kill-worker-after N``: kill the worker node's raylet (SIGKILL) once N run folders are
complete under ``WORK/hidden``. Prints one JSON line: each command's exit code and output, the
nodes, and whether the worker was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT = 6390


def sh(*cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    return done


def raylets() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "core/src/ray/raylet/raylet"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive_nodes(env: dict[str, str]) -> list[dict]:
    code = (f"import json, ray; ray.init(address='127.0.0.1:{PORT}', logging_level='error'); "
            "print(json.dumps([{'ip': n['NodeManagerAddress'], 'cpus': n['Resources'].get('CPU', 0), "
            "'id': n['NodeID'][:8], 'head': 'node:__internal_head__' in n['Resources']} "
            "for n in ray.nodes() if n['Alive']]))")
    return json.loads(sh(sys.executable, "-c", code, env=env).stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--head-cpus", type=int, default=0)
    ap.add_argument("--worker-cpus", type=int, default=2)
    ap.add_argument("--kill-worker-after", type=int, default=0)
    argv = sys.argv[1:]
    marks = [i for i, a in enumerate(argv) if a == "--"] + [len(argv)]
    args = ap.parse_args(argv[:marks[0]])
    commands = [argv[i + 1:j] for i, j in zip(marks, marks[1:])]
    work = Path(args.work).resolve()
    hidden, project = work / "hidden", work / "hidden" / "project"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           # the cluster's own token: every process of it (and only they) holds it
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    # Ray's own folder: short, as its socket paths must be (at most 107 characters)
    temp = tempfile.mkdtemp(prefix="clbench-ray-", dir="/tmp")
    sh("ray", "start", "--head", "--port", str(PORT), "--num-cpus", str(args.head_cpus), "--include-dashboard",
       "false", "--temp-dir", temp, *common, env=env)
    head_raylets = raylets()
    worker = " ".join(["ray", "start", "--address", f"127.0.0.1:{PORT}", "--num-cpus", str(args.worker_cpus),
                       *common])
    sh("unshare", "--mount", "sh", "-c", f"mount -t tmpfs clbench-hidden '{hidden}' && {worker}", env=env)
    worker_raylets = raylets() - head_raylets
    deadline = time.time() + 60
    while len(nodes := alive_nodes(env)) < 2 and time.time() < deadline:
        time.sleep(1)
    killed, results = False, []
    for command in commands:
        driver = subprocess.Popen(["clbench", *command, "--address", f"127.0.0.1:{PORT}"], cwd=project, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while args.kill_worker_after and driver.poll() is None and not killed:
            if len(list(hidden.glob("**/summary.json"))) >= args.kill_worker_after:
                for pid in worker_raylets:
                    os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.2)
        output, _ = driver.communicate(timeout=900)
        results.append({"rc": driver.returncode, "output": output})
    print(json.dumps({"commands": results, "nodes": nodes, "killed": killed, "worker_raylets": sorted(worker_raylets)}))
    sh("ray", "stop", "--force", env=env)  # only this namespace's Ray processes are visible here
    shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
