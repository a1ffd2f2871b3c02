"""Proofs of the container runtime (SWEEP_TEST_POD_RUNTIME=podman): a pod is a podman pod
of its image, with the pod's command, env, volumes, securityContext and its own address.
Skipped in process mode (the default) and on a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

pytestmark = [
    pytest.mark.kube,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SWEEP_TEST_POD_RUNTIME") != "podman"
        or bool(os.environ.get("SWEEP_TEST_KUBECONFIG")),
        reason="the emulator's container runtime only (SWEEP_TEST_POD_RUNTIME=podman)",
    ),
]

IMAGE = os.environ.get("SWEEP_TEST_IMAGE", "")

# What a container of the runner image sees of itself, printed as one JSON line.
PROBE = r"""
import errno, json, os, socket, sys, urllib.request
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((host, 9)); ip = s.getsockname()[0]
def writable(path):
    try:
        open(os.path.join(path, "probe"), "w").close(); return True
    except OSError as e:
        return errno.errorcode[e.errno]
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
url = f"http://{host}:{port}/api/v1/namespaces/{os.environ['NS']}/pods/{socket.gethostname()}"
print(json.dumps({
    "ip": ip, "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "hostname": socket.gethostname(), "cwd": os.getcwd(), "argv": sys.argv[1:],
    "env": {k: os.environ.get(k) for k in ("LITERAL", "FROM_CM", "FROM_SECRET", "EXPANDED", "HOME")},
    "config": open("/etc/cfg/app.conf").read(), "root": writable("/"), "tmp": writable("/tmp"),
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "api_pod_ip": json.load(urllib.request.urlopen(url))["status"]["podIP"],
    "hosts": open("/etc/hosts").read(),
}), flush=True)
sys.exit(7)
"""


def _podman(kube_cluster, *args: str) -> str:
    from tests.kube.cluster.podman import podman_env

    env = podman_env(kube_cluster.state_dir)  # the cluster's containers.conf
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, check=True
    ).stdout


def _create(kube_cluster, ns: str, *objs: dict) -> None:
    from kr8s.objects import object_from_spec

    for o in objs:
        object_from_spec(o, api=kube_cluster.api).create()


def _pod(kube_cluster, ns: str, name: str) -> dict:
    return kube_cluster.get("pods", name, ns) or {}


def _terminated(pod: dict) -> dict | None:
    for st in pod.get("status", {}).get("containerStatuses") or []:
        return st.get("state", {}).get("terminated")
    return None


@pytest.mark.timeout(120)
def test_a_pod_is_a_container_of_its_image(kube_cluster, kube_namespace):
    ns, name = kube_namespace, f"probe-{uuid.uuid4().hex[:6]}"
    _create(
        kube_cluster,
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns},
         "data": {"app.conf": "answer = 42\n", "FROM_CM": "cm-value"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": ns},
         "stringData": {"token": "s3cr3t"}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "runAsGroup": 10001, "fsGroup": 2000},
                "containers": [{
                    "name": "main",
                    "image": IMAGE,
                    # command replaces the image's ENTRYPOINT (sweep), args are its arguments
                    "command": ["python", "-c", PROBE],
                    "args": ["first", "$(LITERAL)"],
                    "workingDir": "/etc/cfg",
                    "env": [
                        {"name": "NS", "value": ns},
                        {"name": "LITERAL", "value": "lit"},
                        {"name": "EXPANDED", "value": "x-$(LITERAL)-$(FROM_CM)"},
                        {"name": "FROM_SECRET",
                         "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
                    ],
                    "envFrom": [{"configMapRef": {"name": "cfg"}}],
                    "securityContext": {"readOnlyRootFilesystem": True,
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
                                     {"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                            {"name": "tmp", "emptyDir": {}}],
            },
        },
    )  # fmt: skip
    pod = kube_cluster.wait_for(
        lambda: (
            (p := _pod(kube_cluster, ns, name)).get("status", {}).get("phase") == "Failed" and p
        ),
        timeout=60,
        message=lambda: json.dumps(_pod(kube_cluster, ns, name).get("status"))[-1500:],
    )
    assert _terminated(pod)["exitCode"] == 7
    line = kube_cluster.pod_logs(name, ns).strip().splitlines()[-1]
    seen = json.loads(line)
    pod_ip = pod["status"]["podIP"]
    # its own network namespace: the address it sees is the pod IP, not a loopback one
    assert seen["ip"] == pod_ip == seen["api_pod_ip"] and not pod_ip.startswith("127.")
    assert pod["status"]["hostIP"] == os.environ["SWEEP_TEST_S3_HOST"]
    assert seen["hostname"] == name and f"{pod_ip}\t{name}" in seen["hosts"]
    assert (seen["uid"], seen["gid"]) == (10001, 10001) and 2000 in seen["groups"]
    assert seen["argv"] == ["first", "lit"] and seen["cwd"] == "/etc/cfg"
    assert seen["env"] == {
        "LITERAL": "lit", "FROM_CM": "cm-value", "FROM_SECRET": "s3cr3t",
        "EXPANDED": "x-lit-cm-value", "HOME": "/home/sweep",  # the image's ENV
    }  # fmt: skip
    assert seen["config"] == "answer = 42\n"
    # read-only root without podman's extra tmpfs; the emptyDir is writable for uid 10001
    assert seen["root"] == "EROFS" and seen["tmp"] is True
    assert seen["cap_eff"] == "0000000000000000" and seen["no_new_privs"] == "1"

    from kr8s.objects import Pod

    Pod.get(name, namespace=ns, api=kube_cluster.api).delete()
    kube_cluster.wait_for(lambda: not _pod(kube_cluster, ns, name), timeout=30)
    kube_cluster.wait_for(
        lambda: (
            name not in _podman(kube_cluster, "ps", "-a", "--format", "{{.Names}}")
            and name not in _podman(kube_cluster, "pod", "ps", "--format", "{{.Name}}")
        ),
        timeout=30,
        message="the pod's containers and podman pod to be removed",
    )


@pytest.mark.timeout(120)
def test_restart_probe_grace_and_run_as_root_refused(kube_cluster, kube_namespace):
    """OnFailure restarts the container (same pod, same emptyDir), an exec readiness probe
    runs in the container, a graceful delete delivers SIGTERM, and runAsNonRoot refuses
    a container that would run as root."""
    ns = kube_namespace
    code = (
        "import os, signal, sys, time\n"
        "if not os.path.exists('/work/once'):\n"
        "    open('/work/once', 'w').close(); print('first run', flush=True); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('SIGTERM', flush=True), sys.exit(0)))\n"
        "open('/work/ready', 'w').close(); print('second run', flush=True)\n"
        "time.sleep(300)\n"
    )
    _create(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "restarts", "namespace": ns},
            "spec": {
                "restartPolicy": "OnFailure",
                "terminationGracePeriodSeconds": 20,
                "containers": [{
                    "name": "main", "image": IMAGE, "command": ["python", "-c", code],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/work/ready"]},
                                       "periodSeconds": 1},
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }],
                "volumes": [{"name": "work", "emptyDir": {}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "as-root", "namespace": ns},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 0},
                "containers": [{"name": "main", "image": IMAGE, "args": ["--help"]}],
            },
        },
    )  # fmt: skip

    def ready() -> dict | None:
        p = _pod(kube_cluster, ns, "restarts")
        sts = p.get("status", {}).get("containerStatuses") or [{}]
        return p if sts[0].get("ready") else None

    pod = kube_cluster.wait_for(
        ready, timeout=60, message=lambda: json.dumps(_pod(kube_cluster, ns, "restarts"))[-1500:]
    )
    st = pod["status"]["containerStatuses"][0]
    assert st["restartCount"] == 1 and st["lastState"]["terminated"]["exitCode"] == 3
    assert "second run" in kube_cluster.pod_logs("restarts", ns)

    from kr8s.objects import Pod

    t0 = time.monotonic()
    Pod.get("restarts", namespace=ns, api=kube_cluster.api).delete()
    kube_cluster.wait_for(lambda: not _pod(kube_cluster, ns, "restarts"), timeout=30)
    assert time.monotonic() - t0 < 15  # it ended on SIGTERM, not at the 20 s deadline
    logs = sorted(
        (kube_cluster.state_dir / "pods").glob(f"{ns}_restarts_*/logs/main-1.log")
    )  # the kubelet's log file of the second run
    assert logs and "SIGTERM" in logs[0].read_text()

    root = _pod(kube_cluster, ns, "as-root")
    kube_cluster.wait_for(
        lambda: (
            "CreateContainerConfigError"
            in json.dumps(_pod(kube_cluster, ns, "as-root").get("status"))
        ),
        timeout=30,
        message=lambda: json.dumps(root.get("status")),
    )
