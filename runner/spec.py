"""The sweep spec: parse, validate, hash.

A :class:`SweepSpec` is frozen once built. YAML files and Python keyword arguments
produce the same object; every validation problem becomes one :class:`SpecError`
line naming the file and the field.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import marshal
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .exceptions import SpecError

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUEUE_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)?[^\s]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- params


class Linspace(_Model):
    """A numeric axis: ``num`` evenly spaced values from ``start`` to ``stop`` inclusive."""

    start: float
    stop: float
    num: PositiveInt
    log: bool = False

    @model_validator(mode="after")
    def _check_log(self) -> Linspace:
        if self.log and (self.start <= 0 or self.stop <= 0):
            raise ValueError("log spacing needs start and stop > 0")
        return self


GridAxis = Annotated[list[Any], Field(min_length=1)] | Linspace


class RandomColumn(_Model):
    """One random column: exactly one distribution."""

    uniform: tuple[float, float] | None = None
    normal: tuple[float, Annotated[float, Field(gt=0)]] | None = None
    loguniform: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None
    integers: tuple[int, int] | None = None
    choice: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RandomColumn:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one distribution of uniform, normal, loguniform, integers, choice"
                f" (got {', '.join(given) or 'none'})"
            )
        for key in ("uniform", "loguniform", "integers"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{key} needs [low, high] with low < high")
        return self


class RandomSource(_Model):
    n: PositiveInt
    seed: int | None = None
    columns: Annotated[dict[str, RandomColumn], Field(min_length=1)]


class QMCSource(_Model):
    """Latin hypercube or Sobol design over a box (``scipy.stats.qmc``)."""

    n: PositiveInt
    seed: int | None = None
    bounds: Annotated[dict[str, tuple[float, float]], Field(min_length=1)]
    scramble: bool = True

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"bounds of {name!r} need [low, high] with low < high")
        return v


class DatasetSource(_Model):
    """Parameters read from a Parquet/CSV/JSONL file or a prefix of such files."""

    url: str
    format: Literal["parquet", "csv", "jsonl"] | None = None
    columns: list[str] | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return _check_url_text(v)


class ParamsSpec(_Model):
    """Exactly one parameter source."""

    dataset: DatasetSource | None = None
    grid: Annotated[dict[str, GridAxis], Field(min_length=1)] | None = None
    random: RandomSource | None = None
    lhs: QMCSource | None = None
    sobol: QMCSource | None = None
    halton: QMCSource | None = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_str(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str | os.PathLike) else v

    @model_validator(mode="after")
    def _exactly_one(self) -> ParamsSpec:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one parameter source of dataset, grid, random, lhs, sobol, halton"
                f" (got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)


# --------------------------------------------------------------------------- cluster


class KubernetesSpec(_Model):
    """Where and how to run the Dask cluster on Kubernetes (``cluster.kind: kubernetes``)."""

    namespace: str | None = None
    image: str | None = None
    worker_template: str | dict[str, Any] | None = None
    scheduler_template: str | dict[str, Any] | None = None
    min_workers: NonNegativeInt = 0
    max_workers: PositiveInt = 10
    partitions_per_worker: PositiveInt = 2
    worker_threads: PositiveInt = 1
    env_from_secret: str | None = None
    service_account: str | None = None
    startup_timeout: Annotated[float, Field(gt=0)] = 300.0
    # true: through the Dask operator (DaskCluster); false: the runner creates the pods
    # itself (no CRDs, no cluster-admin); auto: the operator where its CRD is installed
    operator: bool | Literal["auto"] = "auto"
    # a Kueue LocalQueue: the runner Job is created suspended until Kueue admits it, and
    # it and the worker pods carry the kueue.x-k8s.io/queue-name label
    queue: str | None = None

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 63 or not QUEUE_RE.match(v)):
            raise ValueError(
                "the name of a Kueue LocalQueue in the sweep's namespace: lowercase letters,"
                " digits, '-' and '.', at most 63 characters (kubectl get localqueues)"
            )
        return v

    @model_validator(mode="after")
    def _check_range(self) -> KubernetesSpec:
        if self.min_workers > self.max_workers:
            raise ValueError("min_workers must not exceed max_workers")
        return self


class ClusterSpec(_Model):
    """Which Dask cluster runs the sweep: ``local`` (default), ``address``, ``kubernetes``."""

    kind: Literal["local", "address", "kubernetes"] = "local"
    address: str | None = None
    workers: PositiveInt | None = None
    threads_per_worker: PositiveInt = 1
    # local and kubernetes: the runner runs the probe in a child process while the cluster
    # starts, and a sweep of seconds of work entirely; false: every item on the workers
    inline: bool = True
    kubernetes: KubernetesSpec = KubernetesSpec()

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs an address, e.g. tcp://scheduler:8786")
        return self


# --------------------------------------------------------------------------- after the run

#: how a run can end, as ``notify.on`` names it
NOTIFY_EVENTS = ("finished", "failed", "budget", "interrupted")


class NotifySpec(_Model):
    """POST the run's report as JSON to ``webhook`` when the run ends one of the ``on`` ways.

    ``webhook`` is a secret (it often embeds a token): it is redacted wherever the spec is
    written, and may be given as ``${ENV_VAR}`` to come from the environment (a Secret).
    """

    webhook: str
    on: Annotated[
        list[Literal["finished", "failed", "budget", "interrupted"]], Field(min_length=1)
    ] = [
        "finished",
        "failed",
        "budget",
    ]
    timeout: Annotated[float, Field(gt=0)] = 10.0

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, v: str) -> str:
        if not re.match(r"^(https?://\S+|\$\{[A-Za-z_][A-Za-z0-9_]*\})$", v):
            raise ValueError("use an http(s):// URL, or ${ENV_VAR} to read it from the environment")
        return v


# --------------------------------------------------------------------------- sweep


class SweepSpec(_Model):
    """A validated, frozen sweep.

    Parameters mirror the YAML keys; see the README for each field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = "sweep"
    function: str | list[str] | Callable[..., Any]
    call: Literal["row", "kwargs", "batch", "command"] = "kwargs"
    batch_format: Literal["numpy", "pandas"] = "numpy"
    params: ParamsSpec
    partition_size: Literal["auto"] | PositiveInt = "auto"
    output: str
    retries: NonNegativeInt = 0
    max_failures: NonNegativeInt | Annotated[float, Field(ge=0, lt=1)] = 0
    seed: int = 0
    timeout: Annotated[float, Field(gt=0)] | None = None
    isolation: Literal["auto", "process"] = "auto"
    storage_options: dict[str, Any] = {}
    cluster: ClusterSpec = ClusterSpec()
    # what a run may spend: worker-hours (and, priced, money); reached, it stops cleanly
    max_worker_hours: Annotated[float, Field(gt=0)] | None = None
    price_per_worker_hour: Annotated[float, Field(ge=0)] | None = None
    max_cost: Annotated[float, Field(gt=0)] | None = None
    notify: NotifySpec | None = None
    # results reused across sweeps (runner.cache): a URL; not part of the sweep's identity
    cache: str | None = None
    base_dir: str | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if len(v) > 40 or not NAME_RE.match(v):
            raise ValueError(
                "use lowercase letters, digits and '-', at most 40 characters"
                " (it names Kubernetes objects)"
            )
        return v

    @field_validator("output")
    @classmethod
    def _check_output(cls, v: str) -> str:
        return _check_url_text(v).rstrip("/") or "/"

    @field_validator("cache")
    @classmethod
    def _check_cache(cls, v: str | None) -> str | None:
        return None if v is None else _check_url_text(v).rstrip("/") or "/"

    @field_validator("max_failures", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if isinstance(v, float) and v >= 1 and v.is_integer():
            return int(v)
        return v

    @field_validator("function")
    @classmethod
    def _check_function(cls, v: Any) -> Any:
        if isinstance(v, str) and ":" not in v:
            raise ValueError(
                "use 'package.module:function' or 'path/to/file.py:function'"
                " (or a list of argv strings with call: command)"
            )
        if isinstance(v, list) and not v:
            raise ValueError("the command list is empty")
        return v

    @model_validator(mode="before")
    @classmethod
    def _command_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("function"), list) and "call" not in data:
            data = {**data, "call": "command"}
        return data

    @model_validator(mode="after")
    def _check_cost(self) -> SweepSpec:
        if self.max_cost is not None and self.price_per_worker_hour is None:
            raise ValueError(
                "max_cost needs price_per_worker_hour (the price of one worker for an hour)"
            )
        return self

    @model_validator(mode="after")
    def _check_kube_output(self) -> SweepSpec:
        if self.cluster.kind == "kubernetes" and "://" not in self.output:
            raise ValueError(
                f"output {self.output!r} is a local path, but workers on Kubernetes write from their own"
                " pods: use an object-store URL such as s3://bucket/prefix (or file:///path on a volume"
                " every pod mounts)"
            )
        return self

    @model_validator(mode="after")
    def _check_call(self) -> SweepSpec:
        is_cmd = isinstance(self.function, list)
        if self.call == "command" and not is_cmd:
            raise ValueError(
                "call 'command' needs function to be a list like ['./simulate', '{a}']"
            )
        if self.call != "command" and is_cmd:
            raise ValueError(f"a command list needs call: command (got call: {self.call})")
        return self

    # ------------------------------------------------------------------ derived

    @property
    def is_live_function(self) -> bool:
        return callable(self.function)

    def function_ref(self) -> str | list[str]:
        """A printable reference to the function (module:attr, argv, or a live function)."""
        f = self.function
        if callable(f):
            return f"{getattr(f, '__module__', '?')}:{getattr(f, '__qualname__', repr(f))}"
        return f

    def identity(self) -> dict[str, Any]:
        """The fields that define the results; two specs with equal identity are one sweep."""
        ident: dict[str, Any] = {
            "function": self.function_ref(),
            "call": self.call,
            "params": self.params.model_dump(mode="json", exclude_none=True),
            "seed": self.seed,
        }
        if self.call == "batch":
            ident["batch_format"] = self.batch_format
        if callable(self.function):
            ident["code"] = function_code_hash(self.function)
        if isinstance(self.partition_size, int):
            ident["partition_size"] = self.partition_size
        return ident

    def spec_hash(self) -> str:
        """A short, stable hash of :meth:`identity` (guards resume)."""
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (a live function shows as its reference)."""
        d = self.model_dump(mode="json", exclude={"function"}, exclude_none=True)
        d["function"] = self.function_ref()
        return d


def function_code_hash(func: Callable[..., Any]) -> str:
    """Hash a live function's code so an edited function is a different sweep."""
    try:
        text = inspect.getsource(func).encode()
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        text = marshal.dumps(code) if code is not None else repr(func).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _check_url_text(v: str) -> str:
    v = str(v).strip()
    if not v or not URL_RE.match(v):
        raise ValueError(f"not a valid path or URL: {v!r}")
    proto = v.split("://", 1)[0] if "://" in v else "file"
    import fsspec

    if proto not in fsspec.available_protocols():
        raise ValueError(f"unknown storage protocol {proto!r} in {v!r}")
    if proto in ("s3", "s3a", "gs", "gcs", "az", "abfs") and not v.split("://", 1)[1].strip("/"):
        raise ValueError(f"{v!r} names no bucket")
    return v


# --------------------------------------------------------------------------- loading


# pydantic names the member of a union an error belongs to inside its location
_UNION_TAG = re.compile(
    r"^(function-|constrained-|tuple\[|list\[|dict\[|literal\[)|^(Linspace|int|float|str|bool)$"
)
# errors that only say "not this member of the union" when another member says more
_WRONG_MEMBER = frozenset(
    {"model_type", "model_attributes_type", "dict_type", "list_type", "is_instance_of"}
)


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line: ``where: field.path: message; other.field: message``."""
    found: dict[str, list[tuple[str, str]]] = {}  # location -> [(error type, message)]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _UNION_TAG.match(str(p)))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), _fields_at(e["loc"]), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "check the spelling;"
            msg = f"unknown field ({hint} see the README's spec reference)"
        found.setdefault(loc, []).append((e["type"], msg))
    parts: list[str] = []
    for loc, errors in found.items():
        specific = [m for t, m in errors if t not in _WRONG_MEMBER] or [m for _, m in errors]
        for msg in dict.fromkeys(specific):
            parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{where}: " + "; ".join(parts[:4]) + (" …" if len(parts) > 4 else "")


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed where ``loc`` (a pydantic error location) ends."""
    types: list[Any] = [SweepSpec]
    for part in loc[:-1]:
        nxt: list[Any] = []
        for t in _expand(types):
            if isinstance(t, type) and issubclass(t, BaseModel):
                field = t.model_fields.get(str(part))
                if field is not None:
                    nxt.append(field.annotation)
            elif get_origin(t) in (dict, list):
                nxt.append(get_args(t)[-1])
        types = nxt
    return sorted(
        {
            f
            for t in _expand(types)
            if isinstance(t, type) and issubclass(t, BaseModel)
            for f in t.model_fields
        }
    )


def _expand(types: list[Any]) -> list[Any]:
    """Unwrap ``X | None``, ``Union`` and ``Annotated`` into their member types."""
    out: list[Any] = []
    for t in types:
        origin = get_origin(t)
        if origin in (Union, type(int | None)) or origin is Annotated:
            out.extend(_expand(list(get_args(t)) if origin is not Annotated else [get_args(t)[0]]))
        else:
            out.append(t)
    return out


def build_spec(data: dict[str, Any], where: str = "spec") -> SweepSpec:
    """Validate a mapping into a :class:`SweepSpec` or raise one-line :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: the spec must be a mapping of fields, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, where)) from e


def load_spec(path: str | os.PathLike[str], **overrides: Any) -> SweepSpec:
    """Read a YAML spec file, apply non-None ``overrides``, validate.

    Raises
    ------
    SpecError
        The file is missing, is not YAML, or a field is invalid.
    """
    p = Path(path)
    data = merge_overrides(read_spec_file(p), overrides)
    data.setdefault("base_dir", str(p.resolve().parent))
    return build_spec(data, where=str(p))


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A spec file's fields as written (not validated): what every command reads.

    Raises
    ------
    SpecError
        The file is missing, not UTF-8 text, not YAML, empty or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{p}: cannot read the spec file ({e.strerror}); check the path") from e
    except UnicodeDecodeError as e:
        raise SpecError(
            f"{p}: not a text file (byte {e.start} is not UTF-8); give the YAML spec file"
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', e)}") from e
    if data is None:
        raise SpecError(f"{p}: the spec file is empty")
    if not isinstance(data, dict):
        raise SpecError(f"{p}: the spec must be a mapping of fields, got {type(data).__name__}")
    return data


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (``cluster.kind``) that are not None."""
    data = copy.deepcopy(data) if data else {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *head, last = key.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return data


# --------------------------------------------------------------------------- functions


def resolve_function(spec: SweepSpec) -> Callable[..., Any] | list[str]:
    """Import the spec's function on this machine (validates it early, exit code 2).

    A module that is not installed (a local file or a module from the working
    directory) is registered with cloudpickle to travel *by value*, so remote
    workers do not need the file.
    """
    f = spec.function
    if callable(f) or isinstance(f, list):
        return f
    target, _, attr = f.rpartition(":")
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = Path(target)
        if not path.is_absolute() and spec.base_dir and not path.exists():
            path = Path(spec.base_dir) / path
        if not path.exists():
            raise SpecError(
                f"function: file {target!r} not found (relative paths start in the spec's folder)"
            )
        modname = "sweep_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        module = sys.modules.get(modname)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(modname, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[modname] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[modname]
                raise SpecError(
                    f"function: importing {target!r} failed: {type(e).__name__}: {e}"
                ) from e
    else:
        for extra in (os.getcwd(), spec.base_dir):
            if extra and extra not in sys.path:
                sys.path.append(extra)
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise SpecError(
                f"function: cannot import module {target!r} ({e}); install it or run from its folder"
            ) from e
        except Exception as e:
            raise SpecError(
                f"function: importing {target!r} failed: {type(e).__name__}: {e}"
            ) from e
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SpecError(f"function: {target!r} has no attribute {attr!r}")
    if not callable(obj):
        raise SpecError(f"function: {f!r} is not callable")
    _register_by_value(module)
    return obj


def _register_by_value(module: Any) -> None:
    import cloudpickle

    file = getattr(module, "__file__", None) or ""
    if "site-packages" in file or "dist-packages" in file or not file:
        return
    with contextlib.suppress(ValueError):
        cloudpickle.register_pickle_by_value(module)
