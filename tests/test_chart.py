"""The Helm chart helm/sweep, rendered offline with the real Helm SDK (helm-python-sdk).

Every rendered object is validated against the Kubernetes OpenAPI schemas (strict), the
Dask pod templates it ships build CRD-valid DaskClusters, and the chart renders in
substance what `sweep manifest` prints (runner/kube/manifests.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubecheck
import pytest
import yaml

from runner.kube import cluster_spec as cs
from runner.kube import manifests as mf
from runner.spec import ClusterSpec, load_spec

helm = pytest.importorskip("helm_python")

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "sweep"
PI = (ROOT / "examples" / "pi.yaml").read_text()
CANARY = "canary-secret-value-0123456789"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "spec-yaml": {"specYaml": PI, "spec": {"output": "s3://bucket/sweeps/pi"}},
    # the other cluster mode (offline, `auto` finds no DaskCluster resource: pods)
    "operator": {
        "specYaml": PI,
        "spec": {"output": "s3://bucket/sweeps/pi"},
        "dask": {"operator": True},
    },
    "inline-gpu": {
        "spec": {
            "name": "gpu-sim",
            "function": "mysim.model:run",
            "params": {"grid": {"a": [1, 2, 3], "b": {"start": 0, "stop": 1, "num": 5}}},
            "output": "s3://bucket/sweeps/gpu",
            "storage_options": {"client_kwargs": {"endpoint_url": "http://minio:9000"}},
            "cluster": {"kubernetes": {"max_workers": 40, "namespace": "ignored"}},
        },
        "image": {"repository": "reg.example/sim", "tag": "3.1", "pullPolicy": "Always"},
        "imagePullSecrets": ["regcred"],
        "s3Secret": "s3-credentials",
        "dask": {
            "minWorkers": 2,
            "maxWorkers": 16,
            "partitionsPerWorker": 3,
            "workerThreads": 2,
            "startupTimeout": 900,
            "worker": {
                "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "16Gi"}},
                "nodeSelector": {"accelerator": "nvidia-a100"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "env": [{"name": "OMP_NUM_THREADS", "value": "2"}],
                "serviceAccountName": "sim-irsa",
            },
            "scheduler": {"resources": {"requests": {"cpu": "1", "memory": "2Gi"}}},
        },
        "job": {"activeDeadlineSeconds": None, "ttlSecondsAfterFinished": 600, "backoffLimit": 4},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "kueue": {"queueName": "team-gpu"},
    },
    "existing-config": {
        "existingConfigMap": "my-sweep-config",
        "serviceAccount": {"create": False, "name": "runner"},
    },
    "custom-template": {
        "specYaml": PI,
        "spec": {"output": "gs://bucket/pi", "name": "pi-custom"},
        "fullnameOverride": "pi-custom-run",
        "dask": {
            "worker": {
                "podTemplate": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "spec": {
                        "containers": [
                            {"name": "worker", "resources": {"requests": {"cpu": "4"}}},
                            {"name": "log-shipper", "image": "fluent/fluent-bit:3"},
                        ]
                    },
                }
            }
        },
    },
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    helm.disable_logging()
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart: Any, values: dict[str, Any], name: str = "pi", namespace: str = "sweeps"):
    """``(objects, NOTES.txt, all rendered text)`` for one release."""
    out = chart.render(values, name=name, namespace=namespace)
    notes = next((text for path, text in out.items() if path.endswith("NOTES.txt")), "")
    objs = [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return objs, notes, "\n".join(out.values())


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid(chart: Any, case: str) -> None:
    objs, notes, _ = render(chart, VALUE_SETS[case])
    kubecheck.validate_all(objs)
    kinds = sorted({o["kind"] for o in objs})
    expected = {"Job", "Role", "RoleBinding", "NetworkPolicy"}
    if "existingConfigMap" not in VALUE_SETS[case]:
        expected.add("ConfigMap")
    if VALUE_SETS[case].get("serviceAccount", {}).get("create", True):
        expected.add("ServiceAccount")
    assert kinds == sorted(expected)
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "sweep"
        assert labels["app.kubernetes.io/instance"] == "pi"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "sweep-0.1.0"
    assert notes


def test_existing_config_map_is_mounted(chart: Any) -> None:
    objs, _, _ = render(chart, VALUE_SETS["existing-config"])
    job = by_kind(objs)["Job"]["spec"]["template"]["spec"]
    assert {"name": "spec", "configMap": {"name": "my-sweep-config"}} in job["volumes"]
    assert job["serviceAccountName"] == "runner"
    assert by_kind(objs)["RoleBinding"]["subjects"][0]["name"] == "runner"


@pytest.mark.parametrize("case", sorted(set(VALUE_SETS) - {"existing-config"}))
def test_dask_templates_build_valid_dask_clusters(chart: Any, case: str, tmp_path: Path) -> None:
    """Play the runner pod: read the ConfigMap's spec and templates, build the DaskCluster."""
    from runner.clusters.kubernetes import KubernetesProvider

    objs, _, _ = render(chart, VALUE_SETS[case])
    cm = by_kind(objs)["ConfigMap"]
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    data = yaml.safe_load(cm["data"]["spec.yaml"])
    kube = data["cluster"]["kubernetes"]
    assert data["cluster"]["kind"] == "kubernetes"
    assert kube["worker_template"] == "/etc/sweep/worker-template.yaml"
    assert "namespace" not in kube  # the runner's own namespace, where its Role applies
    kube["worker_template"] = str(tmp_path / "worker-template.yaml")
    kube["scheduler_template"] = str(tmp_path / "scheduler-template.yaml")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "spec.yaml")
    provider = KubernetesProvider(ClusterSpec.model_validate(spec.cluster.model_dump()), name="pi")
    resource = provider.cluster_resource(token="abc123")
    kubecheck.validate(resource)
    if case == "inline-gpu":
        assert (kube["min_workers"], kube["max_workers"]) == (2, 16)
        assert (kube["partitions_per_worker"], kube["worker_threads"]) == (3, 2)
        assert kube["env_from_secret"] == "s3-credentials"
        worker = resource["spec"]["worker"]["spec"]
        c = worker["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert worker["nodeSelector"] == {"accelerator": "nvidia-a100"}
        assert worker["serviceAccountName"] == "sim-irsa"
        assert worker["imagePullSecrets"] == [{"name": "regcred"}]
        assert {"name": "OMP_NUM_THREADS", "value": "2"} in c["env"]
        assert {"secretRef": {"name": "s3-credentials"}} in c["envFrom"]
        assert c["args"][-2:] == ["--nthreads", "2"]
        assert kube["queue"] == "team-gpu"
        assert resource["spec"]["worker"]["metadata"]["labels"][cs.QUEUE_LABEL] == "team-gpu"
        assert cs.QUEUE_LABEL not in resource["spec"]["scheduler"].get("metadata", {}).get(
            "labels", {}
        )
    else:
        assert "queue" not in kube
    if case == "custom-template":
        names = [c["name"] for c in resource["spec"]["worker"]["spec"]["containers"]]
        assert names == ["worker", "log-shipper"]


def test_spec_yaml_survives_helm_yaml_1_1(chart: Any) -> None:
    """`n: 1000000` is a key to the runner (PyYAML), a boolean to Helm: it must stay n."""
    objs, _, _ = render(chart, VALUE_SETS["spec-yaml"])
    got = yaml.safe_load(by_kind(objs)["ConfigMap"]["data"]["spec.yaml"])
    want = yaml.safe_load(PI)
    assert got["params"] == want["params"] and got["params"]["random"]["n"] == 1000000
    assert {k: v for k, v in got.items() if k not in ("cluster", "output")} == {
        k: v for k, v in want.items() if k != "output"
    }
    assert got["output"] == "s3://bucket/sweeps/pi"


def test_mangled_values_file_keys_fail_with_a_fix(chart: Any) -> None:
    values = helm.values_from_yaml(
        "spec:\n" + "".join(f"  {line}\n" for line in PI.splitlines()) + "  output: s3://b/pi\n"
    )
    with pytest.raises(helm.HelmRenderError, match="--set-file specYaml"):
        chart.render(values, name="pi")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "spec.function is required"),
        ({"specYaml": PI}, "local path"),
        ({"specYaml": PI, "spec": {"output": "file:///data/pi"}}, "local path"),
        (
            {
                "specYaml": PI,
                "spec": {"output": "s3://b/pi", "storage_options": {"secret": CANARY}},
            },
            "literal credential",
        ),
        (
            {
                "specYaml": PI,
                "spec": {"output": "s3://b/pi"},
                "dask": {"worker": {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": CANARY}]}},
            },
            "literal credential",
        ),
        (
            {
                "specYaml": PI,
                "spec": {"output": "s3://b/pi", "notify": {"webhook": f"https://h/{CANARY}"}},
            },
            r"notify.webhook holds a literal URL.*\$\{VAR\}",
        ),
    ],
)
def test_bad_specs_fail_to_render_with_what_to_do(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message) as e:
        chart.render(values, name="pi")
    assert CANARY not in str(e.value)


def test_no_secret_value_in_rendered_text(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    for values in VALUE_SETS.values():
        objs, _notes, text = render(chart, values)
        assert CANARY not in text
        assert "Secret" not in {o["kind"] for o in objs}
    _, _, text = render(chart, VALUE_SETS["inline-gpu"])
    assert "s3-credentials" in text  # by reference


def test_notes_say_how_to_follow_the_dashboard_and_results(chart: Any) -> None:
    _, notes, _ = render(chart, VALUE_SETS["spec-yaml"], name="pi", namespace="sweeps")
    assert "kubectl logs -n sweeps -f job/pi-sweep" in notes
    assert "port-forward" in notes and "8787" in notes and "scheduler" in notes
    assert "s3://bucket/sweeps/pi" in notes and "sweep results s3://bucket/sweeps/pi" in notes
    assert "helm uninstall pi -n sweeps" in notes
    _, notes, _ = render(chart, VALUE_SETS["existing-config"])
    assert "my-sweep-config" in notes


# ------------------------------------------------------------------ same as `sweep manifest`


@pytest.mark.parametrize("operator", [True, False])
def test_chart_matches_sweep_manifest(chart: Any, operator: bool) -> None:
    values = {**VALUE_SETS["spec-yaml"], "s3Secret": "s3-credentials"}
    objs, _, _ = render(chart, {**values, "dask": {"operator": operator}})
    chart_objs = by_kind(objs)
    spec = load_spec(ROOT / "examples" / "pi.yaml", output="s3://bucket/sweeps/pi")
    worker = cs.load_pod_template(None, "worker")
    scheduler = cs.load_pod_template(None, "scheduler")
    ours = by_kind(
        mf.build_manifests(
            spec,
            worker_template=worker,
            scheduler_template=scheduler,
            spec_data={**yaml.safe_load(PI), "output": "s3://bucket/sweeps/pi"},
            options=mf.ManifestOptions(
                namespace="sweeps", secret="s3-credentials", operator=operator
            ),
        )
    )
    for kind in ours:
        assert chart_objs[kind]["metadata"]["name"] == ours[kind]["metadata"]["name"], kind
    assert chart_objs["Role"]["rules"] == ours["Role"]["rules"] == mf.rbac_rules(operator)
    assert chart_objs["RoleBinding"]["roleRef"] == ours["RoleBinding"]["roleRef"]
    assert chart_objs["RoleBinding"]["subjects"] == ours["RoleBinding"]["subjects"]
    cj, oj = chart_objs["Job"]["spec"], ours["Job"]["spec"]
    for key in (
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "podFailurePolicy",
    ):
        assert cj[key] == oj[key], key
    cp, op = cj["template"]["spec"], oj["template"]["spec"]
    for key in (
        "restartPolicy",
        "securityContext",
        "terminationGracePeriodSeconds",
        "enableServiceLinks",
        "serviceAccountName",
        "volumes",
    ):
        assert cp[key] == op[key], key
    (cc,), (oc,) = cp["containers"], op["containers"]
    for key in (
        "name",
        "image",
        "command",
        "args",
        "env",
        "envFrom",
        "resources",
        "securityContext",
    ):
        assert cc[key] == oc[key], key
    assert cc["volumeMounts"] == oc["volumeMounts"]
    # the same templates and the same spec reach the runner
    cd, od = chart_objs["ConfigMap"]["data"], ours["ConfigMap"]["data"]
    assert yaml.safe_load(cd["worker-template.yaml"]) == yaml.safe_load(od["worker-template.yaml"])
    assert yaml.safe_load(cd["scheduler-template.yaml"]) == yaml.safe_load(
        od["scheduler-template.yaml"]
    )
    assert yaml.safe_load(cd["spec.yaml"]) == yaml.safe_load(od["spec.yaml"])
    chart_policies = {o["metadata"]["name"]: o for o in objs if o["kind"] == "NetworkPolicy"}
    our_policies = {
        o["metadata"]["name"]: o
        for o in mf.build_manifests(
            spec,
            worker_template=worker,
            scheduler_template=scheduler,
            options=mf.ManifestOptions(namespace="sweeps", operator=operator),
        )
        if o["kind"] == "NetworkPolicy"
    }
    assert (
        sorted(chart_policies) == sorted(our_policies) == ["pi-sweep-runner", "pi-sweep-scheduler"]
    )
    for name, policy in our_policies.items():
        assert chart_policies[name]["spec"] == policy["spec"], name


def test_kueue_queue_labels_the_job_and_creates_it_suspended(chart: Any) -> None:
    """kueue.queueName, else the spec's cluster.kubernetes.queue, as `sweep manifest`."""
    spec = load_spec(ROOT / "examples" / "pi.yaml", output="s3://bucket/sweeps/pi")
    out = "s3://bucket/sweeps/pi"
    in_spec = {"output": out, "cluster": {"kubernetes": {"queue": "from-spec"}}}
    for values, queue in (
        ({"specYaml": PI, "spec": {"output": out}, "kueue": {"queueName": "team-a"}}, "team-a"),
        ({"specYaml": PI, "spec": in_spec}, "from-spec"),
        ({"specYaml": PI, "spec": in_spec, "kueue": {"queueName": ""}}, None),
        ({"existingConfigMap": "cm", "kueue": {"queueName": "team-b"}}, "team-b"),
        ({"specYaml": PI, "spec": {"output": out}}, None),
    ):
        objs, notes, _ = render(chart, values)
        job = by_kind(objs)["Job"]
        assert job["metadata"]["labels"].get(cs.QUEUE_LABEL) == queue, values
        assert job["spec"].get("suspend", False) is bool(queue), values
        assert ("admits it" in notes) is bool(queue), values
        if queue and "existingConfigMap" not in values:
            data = yaml.safe_load(by_kind(objs)["ConfigMap"]["data"]["spec.yaml"])
            assert data["cluster"]["kubernetes"]["queue"] == queue
            kube = spec.cluster.kubernetes.model_copy(update={"queue": queue})
            ours = mf.build_manifests(
                spec.model_copy(
                    update={"cluster": spec.cluster.model_copy(update={"kubernetes": kube})}
                ),
                worker_template=cs.load_pod_template(None, "worker"),
                scheduler_template=cs.load_pod_template(None, "scheduler"),
            )
            ours_job = by_kind(ours)["Job"]
            assert ours_job["metadata"]["labels"][cs.QUEUE_LABEL] == queue
            assert ours_job["spec"]["suspend"] is True


def test_chart_operator_auto_follows_the_clusters_api_versions(chart: Any) -> None:
    """`auto` (the default) renders for the operator only where the cluster serves its
    DaskCluster resource; offline (helm template, the SDK) it does not: pods, and the
    runner is told so, so its Role and its mode agree."""
    objs, _, _ = render(chart, VALUE_SETS["spec-yaml"])
    kinds = by_kind(objs)
    assert kinds["Role"]["rules"] == mf.rbac_rules(False)
    spec = yaml.safe_load(kinds["ConfigMap"]["data"]["spec.yaml"])
    assert spec["cluster"]["kubernetes"]["operator"] is False
    objs, _, _ = render(chart, {**VALUE_SETS["spec-yaml"], "dask": {"operator": "auto"}})
    assert by_kind(objs)["Role"]["rules"] == mf.rbac_rules(False)


def test_chart_pod_templates_are_the_packaged_ones() -> None:
    for role in ("worker", "scheduler"):
        chart_file = CHART / "files" / f"{role}-pod.yaml"
        assert chart_file.read_text() == cs.default_template_path(role).read_text(), (
            f"copy runner/kube/templates/{role}-pod.yaml to {chart_file}"
        )


# --------------------------------------------------------------------------- chart hygiene


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_lint_is_clean(case: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[case], strict=True, namespace="sweeps")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == "sweep"
    from runner import __version__

    assert meta["appVersion"] == __version__.split("+")[0]
    assert "dependencies" not in meta  # the Dask operator is a documented prerequisite


@pytest.mark.parametrize(
    "bad",
    [
        {"dask": {"maxWorkers": 0}},
        {"dask": {"minWorkers": -1}},
        {"dask": {"workerThreads": "two"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"image": {"repository": ""}},
        {"job": {"backoffLimit": -1}},
        {"s3Secret": "Not A Name"},
        {"dask": {"worker": {"resources": {"limit": {"cpu": "1"}}}}},
        {"dask": {"worker": {"podTemplate": {"spec": {"containers": []}}}}},
        {"replicas": 3},
    ],
)
def test_values_schema_rejects_bad_values(chart: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)):
        chart.render({**VALUE_SETS["spec-yaml"], **bad}, name="pi")


def test_values_schema_accepts_the_value_sets(chart: Any) -> None:
    for values in VALUE_SETS.values():
        chart.validate_schema(values)


def _leaves(values: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("resources",):
            out |= _leaves(v, path + ".")
        else:
            out.add(path)
    return out


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in schema.get("properties", {}).items():
        path = f"{prefix}{k}"
        if v.get("type") == "object" and "properties" in v and "$ref" not in v:
            out |= _schema_paths(v, path + ".")
        else:
            out.add(path)
    return out


def test_values_yaml_schema_and_params_are_in_step() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    leaves = _leaves(values)
    assert leaves == _schema_paths(schema), "values.yaml and values.schema.json differ"
    params = {line.split()[2] for line in text.splitlines() if line.startswith("## @param ")}
    assert params == leaves, "every value needs one `## @param` line"
    assert schema.get("additionalProperties") is False


def test_runner_pod_leaves_room_for_the_drain(chart: Any) -> None:
    """SIGTERM drains for job.graceSeconds; the pod is killed only after that plus shutdown time."""
    objs, _, _ = render(chart, {**VALUE_SETS["spec-yaml"], "job": {"graceSeconds": 45}})
    pod = {o["kind"]: o for o in objs}["Job"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DASK_SWEEP__GRACE_SECONDS"] == "45"
    assert pod["terminationGracePeriodSeconds"] == mf.termination_grace_period(45) == 105
    job = mf.build_job(
        name="pi",
        instance="pi",
        namespace=None,
        image="img",
        secret=None,
        opts=mf.ManifestOptions(grace_seconds=45),
    )
    ours = job["spec"]["template"]["spec"]
    assert ours["terminationGracePeriodSeconds"] == 105
    assert {"name": "DASK_SWEEP__GRACE_SECONDS", "value": "45"} in ours["containers"][0]["env"]


# --------------------------------------------------------------------------- shared clusters


def test_every_object_names_the_release_namespace(chart: Any) -> None:
    for case in sorted(VALUE_SETS):
        objs, _, _ = render(chart, VALUE_SETS[case], namespace="team-a")
        for o in objs:
            assert o["metadata"].get("namespace") == "team-a", (case, o["kind"])


@pytest.mark.parametrize("operator", [True, False])
def test_network_policies_select_the_sweeps_pods(chart: Any, operator: bool) -> None:
    values = {**VALUE_SETS["spec-yaml"], "dask": {"operator": operator}}
    objs, _, _ = render(chart, values, name="pi")
    policies = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy"}
    job = by_kind(objs)["Job"]
    runner_labels = job["spec"]["template"]["metadata"]["labels"]
    # the scheduler pod's labels: the DaskCluster's (the runner sets them), plus the operator's
    scheduler_labels = {
        **cs.sweep_labels("pi", "dask-cluster"),
        "dask.org/cluster-name": "pi",
        "dask.org/component": "scheduler",
    }
    sched, runner_policy = policies["pi-sweep-scheduler"], policies["pi-sweep-runner"]
    assert sched["podSelector"]["matchLabels"].items() <= scheduler_labels.items()
    assert runner_policy["podSelector"]["matchLabels"].items() <= runner_labels.items()
    assert runner_policy["ingress"] == [] and runner_policy["policyTypes"] == ["Ingress"]
    comm, dashboard = sched["ingress"]
    # the comm port: the runner and the workers (both carry the instance label), the operator
    peers = comm["from"][0]["podSelector"]["matchLabels"]
    assert peers.items() <= runner_labels.items() and peers.items() <= scheduler_labels.items()
    if operator:  # the operator retires workers through the scheduler
        assert comm["from"][1:] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dask-operator"}}}
        ]
    else:
        assert comm["from"][1:] == []
    assert {p["port"] for p in comm["ports"]} == {cs.SCHEDULER_PORT, 8787}
    assert dashboard == {
        "from": [{"podSelector": {}}],
        "ports": [{"port": 8787, "protocol": "TCP"}],
    }
    objs, _, _ = render(chart, {**VALUE_SETS["spec-yaml"], "networkPolicy": {"enabled": False}})
    assert "NetworkPolicy" not in by_kind(objs)


CHECKOV_ALLOWED = {
    "CKV_K8S_43": "image digest: which image (tag or digest) to run is the user's choice",
    "CKV_K8S_15": "image pull policy: IfNotPresent by default, a value (image.pullPolicy)",
    "CKV_K8S_38": "service-account token: the runner talks to the API to run its Dask cluster",
    "CKV_K8S_35": "s3Secret as envFrom: the AWS SDKs read AWS_* variables; only when it is set",
}


def _checkov() -> str | None:
    local = ROOT / ".venv-tools" / "checkov" / "bin" / "checkov"
    return str(local) if local.exists() else shutil.which("checkov")


@pytest.mark.timeout(300)
def test_checkov_passes_on_the_rendered_chart(chart: Any, tmp_path: Path) -> None:
    """checkov (its own venv: make test installs it in .venv-tools) finds nothing beyond
    the documented skips, for every value set and for `sweep manifest` in each mode."""
    exe = _checkov()
    if exe is None:
        pytest.skip("checkov is not installed (make test installs it in .venv-tools/checkov)")
    for case in sorted(VALUE_SETS):
        objs, _, _ = render(chart, VALUE_SETS[case])
        path = tmp_path / f"{case}.yaml"
        path.write_text(yaml.safe_dump_all(objs))
    # and what `sweep manifest` prints, in each mode
    spec = load_spec(ROOT / "examples" / "pi.yaml", output="s3://bucket/sweeps/pi")
    for operator in (True, False, None):
        objs = mf.build_manifests(
            spec,
            worker_template=cs.load_pod_template(None, "worker"),
            scheduler_template=cs.load_pod_template(None, "scheduler"),
            options=mf.ManifestOptions(namespace="sweeps", secret="s3", operator=operator),
        )
        (tmp_path / f"manifest-{operator}.yaml").write_text(yaml.safe_dump_all(objs))
    r = subprocess.run(
        [exe, "-d", str(tmp_path), "--framework", "kubernetes", "-o", "json", "--quiet",
         "--compact", "--skip-download", "--skip-check", ",".join(CHECKOV_ALLOWED)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    report = json.loads(r.stdout)
    failed = [
        (c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert report["summary"]["passed"] > 50
