"""`sweep manifest|submit|status|logs|cancel` (registered on the main CLI app).

Thin faces: the objects come from :mod:`runner.kube.manifests`, the API calls from
:mod:`runner.kube.submit`. Exit codes follow the CLI contract: 2 for bad input,
3 for Kubernetes API or cluster problems; ``submit --wait`` exits with the runner's
own code (0 ok, 1 failure budget exceeded, 2 bad input, 3 infrastructure, 128+N signal).
As in :mod:`runner.cli`, the commands import what they use inside their bodies.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..exceptions import InfrastructureError, SpecError, SweepError
from ..secrets import redact_url

SpecArg = Annotated[Path, typer.Argument(help="The sweep spec (YAML).", show_default=False)]
NameArg = Annotated[
    str,
    typer.Argument(
        help="The sweep's name on the cluster (its spec name, or the Helm release).",
        show_default=False,
    ),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace (default: the kubeconfig context's)."),
]
ImageOpt = Annotated[
    str | None,
    typer.Option(help="Runner image, also the scheduler's and workers' unless the spec sets one."),
]
SecretOpt = Annotated[
    str | None,
    typer.Option(
        help="Name of an existing Secret with the storage credentials (envFrom, by reference)."
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Override the spec's output URL (s3://bucket/prefix)."),
]
QueueOpt = Annotated[
    str | None,
    typer.Option(
        help="Kueue LocalQueue to admit the sweep (cluster.kubernetes.queue): the Job is"
        " created suspended and labelled, the workers are labelled."
    ),
]
NetworkPolicyOpt = Annotated[
    bool,
    typer.Option(
        help="Add the NetworkPolicies: only the sweep's pods (and the Dask operator's"
        " namespace) reach its scheduler; the runner takes no connections."
    ),
]
OperatorNamespaceOpt = Annotated[
    str | None,
    typer.Option(
        help="Namespace of the Dask operator, let through to the scheduler in operator mode"
        ' (default: dask-operator; "" for none).',
        show_default=False,
    ),
]
ContextOpt = Annotated[str | None, typer.Option(help="kubeconfig context to use.")]
InstanceOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Name of this run on the cluster (objects, labels; default: the spec's name),"
        " e.g. one per commit in CI.",
    ),
]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _out(text: str) -> None:
    print(text, flush=True)


def _fail(e: SweepError) -> typer.Exit:
    _say(f"error: {redact_url(str(e))}")
    return typer.Exit(e.exit_code)


def build_objects(
    spec_path: Path,
    *,
    namespace: str | None = None,
    image: str | None = None,
    secret: str | None = None,
    output: str | None = None,
    instance: str | None = None,
    queue: str | None = None,
    network_policy: bool = True,
    operator_namespace: str | None = None,
    resolve_operator: Callable[[bool | str], bool | None] | None = None,
) -> list[dict[str, Any]]:
    """Load a spec and its pod templates and build the sweep's Kubernetes objects.

    A function given as ``path/to/file.py:fn`` travels in the ConfigMap (one file,
    mounted at ``/etc/sweep``); a module function must be importable in the image.
    ``resolve_operator`` turns the spec's ``cluster.kubernetes.operator`` into the mode
    the Role is made for (``sweep submit`` asks the cluster; ``None`` keeps the spec's).

    Raises
    ------
    SpecError
        The spec, a template or the function file is invalid.
    """
    from ..spec import build_spec, merge_overrides, read_spec_file
    from . import cluster_spec as cs
    from . import manifests as mf

    data = read_spec_file(spec_path)
    data = merge_overrides(data, {"output": output, "cluster.kubernetes.queue": queue})
    base_dir = str(spec_path.resolve().parent)
    spec = build_spec({**data, "base_dir": base_dir}, where=str(spec_path))
    kube = spec.cluster.kubernetes
    worker = cs.load_pod_template(kube.worker_template, "worker", base_dir)
    scheduler = cs.load_pod_template(kube.scheduler_template, "scheduler", base_dir)
    files: dict[str, str] = {}
    if isinstance(spec.function, str):
        target, _, attr = spec.function.rpartition(":")
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_absolute() and not path.exists():
                path = Path(base_dir) / path
            try:
                files[path.name] = path.read_text()
            except OSError as e:
                raise SpecError(
                    f"function: cannot read {target!r} ({e.strerror}); relative paths start in"
                    " the spec's folder"
                ) from e
            data["function"] = f"{mf.CONFIG_DIR}/{path.name}:{attr}"
    operator = resolve_operator(kube.operator) if resolve_operator is not None else None
    options = mf.ManifestOptions(
        namespace=namespace,
        image=image,
        secret=secret,
        instance=instance,
        operator=operator,
        network_policy=network_policy,
        operator_namespace=(
            mf.DEFAULT_OPERATOR_NAMESPACE if operator_namespace is None else operator_namespace
        )
        or None,
    )
    return mf.build_manifests(
        spec,
        worker_template=worker,
        scheduler_template=scheduler,
        spec_data=data,
        files=files,
        options=options,
    )


def _api(namespace: str | None, context: str | None = None) -> Any:
    try:
        from .submit import KubeApi
    except ImportError as e:
        raise InfrastructureError(
            f"the Kubernetes client is not installed ({e}); pip install 'sweep-runner[kubernetes]'"
        ) from e
    return KubeApi(namespace=namespace, context=context)


def manifest(
    spec_path: SpecArg,
    namespace: NamespaceOpt = None,
    image: ImageOpt = None,
    secret: SecretOpt = None,
    output: OutputOpt = None,
    name: InstanceOpt = None,
    queue: QueueOpt = None,
    network_policy: NetworkPolicyOpt = True,
    operator_namespace: OperatorNamespaceOpt = None,
) -> None:
    """Print the sweep's ConfigMap, RBAC and Job as YAML for `kubectl apply -f -`."""
    from .manifests import to_yaml

    try:
        objs = build_objects(
            spec_path,
            namespace=namespace,
            image=image,
            secret=secret,
            output=output,
            instance=name,
            queue=queue,
            network_policy=network_policy,
            operator_namespace=operator_namespace,
        )
    except SweepError as e:
        raise _fail(e) from e
    sys.stdout.write(to_yaml(objs))
    sys.stdout.flush()


def submit(
    spec_path: SpecArg,
    namespace: NamespaceOpt = None,
    image: ImageOpt = None,
    secret: SecretOpt = None,
    output: OutputOpt = None,
    name: InstanceOpt = None,
    queue: QueueOpt = None,
    network_policy: NetworkPolicyOpt = True,
    operator_namespace: OperatorNamespaceOpt = None,
    wait: Annotated[
        bool,
        typer.Option(help="Follow the runner's log and exit with the sweep's exit code."),
    ] = False,
    context: ContextOpt = None,
) -> None:
    """Create the sweep's Job through the Kubernetes API (kubeconfig or in-cluster)."""
    from .cluster_spec import QUEUE_LABEL

    try:
        api = _api(namespace, context)
        objs = build_objects(
            spec_path,
            namespace=api.namespace,
            image=image,
            secret=secret,
            output=output,
            instance=name,
            queue=queue,
            network_policy=network_policy,
            operator_namespace=operator_namespace,
            resolve_operator=lambda requested: api.cluster_mode(requested, out=_say),
        )
        api.create(objs, out=_say)
        job = next(o for o in objs if o["kind"] == "Job")
        instance = job["metadata"]["labels"]["app.kubernetes.io/instance"]
        queued = job["metadata"]["labels"].get(QUEUE_LABEL)
        _say(
            f"submitted sweep {instance} to namespace {api.namespace}"
            + (f" (queued in Kueue LocalQueue {queued}: it starts when admitted)" if queued else "")
            + f"; follow it with `sweep logs {instance} -n {api.namespace} --follow`"
        )
        if not wait:
            return
        code = api.wait(instance, out=_out, err=_say)
    except SweepError as e:
        raise _fail(e) from e
    except KeyboardInterrupt:
        _say(
            "stopped following; the sweep keeps running on the cluster"
            " (`sweep cancel NAME` stops it)"
        )
        raise typer.Exit(130) from None
    _say(f"{instance}: runner exited with code {code}")
    raise typer.Exit(code if code is not None else 3)


def status(
    name: NameArg,
    namespace: NamespaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    context: ContextOpt = None,
) -> None:
    """Show a submitted sweep: Job state, runner pods, Dask cluster, where results land."""
    try:
        info = _api(namespace, context).status(name)
    except SweepError as e:
        raise _fail(e) from e
    if as_json:
        _out(json.dumps(info))
        return
    _out(f"{info['name']}: {info['state']} (job/{info['job']}, namespace {info['namespace']})")
    if info.get("waiting"):
        _out(f"  waiting    {info['waiting']}")
    if info["started"]:
        _out(
            f"  started    {info['started']}"
            + (f", finished {info['finished']}" if info["finished"] else "")
        )
    for c in info["conditions"]:
        _out(
            f"  condition  {c['type']}"
            + (f": {c['reason']}" if c["reason"] else "")
            + (f" ({c['message']})" if c["message"] else "")
        )
    for p in info["pods"]:
        extra = f" exit {p['exit_code']}" if p["exit_code"] is not None else ""
        extra += f" ({p['waiting']})" if p["waiting"] else ""
        _out(f"  pod        {p['name']}: {p['phase']}{extra}")
    for c in info["dask_clusters"]:
        _out(
            f"  dask       {c['name']}: {c['phase']}, {c['workers']} workers;"
            f" dashboard: {c['dashboard']}"
        )
    _out_progress(info.get("progress"))
    if info["output"]:
        _out(f"  output     {info['output']}")
        _out(f"  next       sweep results {info['output']}")
    if info["exit_code"] is not None:
        _out(f"  exit code  {info['exit_code']}")


def _out_progress(p: dict[str, Any] | None) -> None:
    if not p:
        return
    if "error" in p:
        _out(f"  progress   unknown: {p['error']}")
        return
    total = f"{p['items']:,}" if p["items"] else "?"
    pct = f" ({p['percent_done']:.1f}%)" if p["percent_done"] is not None else ""
    line = f"  progress   {p['items_done']:,}/{total} items{pct}, {p['errors']:,} failed"
    line += f"; {p['partitions_done']:,}/{p['partitions'] or '?'} partitions"
    if p["items_per_s"] is not None:
        line += f"; {p['items_per_s']:,.0f} items/s"
    if p["eta_s"] is not None:
        line += f", ETA {_duration(p['eta_s'])}"
    _out(line)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def logs(
    name: NameArg,
    namespace: NamespaceOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep following the log.")] = False,
    context: ContextOpt = None,
) -> None:
    """Print the runner's log of a submitted sweep."""
    try:
        _api(namespace, context).logs(name, out=_out, follow=follow)
    except SweepError as e:
        raise _fail(e) from e
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def cancel(
    name: NameArg,
    namespace: NamespaceOpt = None,
    context: ContextOpt = None,
) -> None:
    """Stop a submitted sweep: delete its Job, Dask cluster, ConfigMap and RBAC (results stay)."""
    try:
        deleted = _api(namespace, context).cancel(name, out=_say)
    except SweepError as e:
        raise _fail(e) from e
    _say(
        f"{name}: cancelled ({len(deleted)} objects deleted); finished partitions stay in the"
        " output: submit the same spec again to resume"
    )


def register(app: Any) -> None:
    """Add the Kubernetes commands to the ``sweep`` Typer app."""
    app.command("manifest")(manifest)
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
