"""A live NVIDIA Triton Inference Server as a runner: logits from a served classifier, over HTTP or gRPC.

    with open_runner("triton", "http://127.0.0.1:8000", model="resnet50_fp16") as r:   # or grpc://host:8001
        logits = r.infer(batch)

The artifact is the server's URL (``http://`` or ``grpc://``; a bare ``host:port`` is HTTP), and
``model`` the served classifier's name, or the URL names it as Triton's REST path does
(``grpc://127.0.0.1:8001/v2/models/resnet50_fp16``: one string for everything that takes an artifact). Without ``model`` the runner takes the one ready model
whose config says it is a classifier written by ``package --target triton`` (its
``resnet_deploy.role`` parameter), and names the candidates when there are several. The input
spec comes from the served config (``max_batch_size`` and dims: a fixed-batch model takes
exactly its batch), and :meth:`TritonRunner.facts` reads the model's ``resnet_deploy.*``
parameters (arch, precision, weights sha256, preprocessing), so parity, eval and predict check
a served model as they check a file.

Every call has a bounded timeout (``timeout_s``, 30 s by default). A server that does not
answer, a model that is not there or not ready, a timeout, and an error the server returns (an
image the ensemble cannot decode) are each one :class:`~resnet_deploy.errors.UserError` line;
a server that cannot be reached is :class:`~resnet_deploy.errors.BackendUnavailable`.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import BackendUnavailable, UserError
from ..versions import dist_version
from .base import InputSpec, Runner

PROTOCOLS = ("http", "grpc")
INSTALL = "pip install 'tritonclient[http,grpc]'"
META_PREFIX = "resnet_deploy."
DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
WIRE = {"TYPE_FP32": "FP32", "TYPE_FP16": "FP16"}


def parse_url(url: str, protocol: str | None = None) -> tuple[str, str, str | None, str]:
    """``(protocol, host:port, model, version)`` of ``http://host:port``, ``grpc://host:port`` or ``host:port`` (HTTP
    unless ``protocol``), optionally followed by Triton's model path ``/v2/models/NAME[/versions/V]``."""
    text = str(url).strip()
    if "://" not in text:
        text = f"{protocol or 'http'}://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in PROTOCOLS:
        raise UserError(f"Triton URL {url!r}: the scheme must be http:// or grpc:// (https and TLS are not supported here)")
    if protocol is not None and protocol != scheme:
        raise UserError(f"Triton URL {url!r} is {scheme}, but protocol {protocol!r} was asked for")
    path = [p for p in parts.path.split("/") if p]
    model, version = None, ""
    if path[:2] == ["v2", "models"] and len(path) in (3, 5) and (len(path) == 3 or path[3] == "versions"):
        model, version = path[2], (path[4] if len(path) == 5 else "")
    elif path:
        raise UserError(f"Triton URL {url!r}: the path may only be /v2/models/NAME[/versions/V]")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise UserError(f"Triton URL {url!r} must be scheme://host:port (for example http://127.0.0.1:8000)")
    return scheme, f"{parts.hostname}:{port}", model, version


def import_client(protocol: str) -> Any:
    try:
        return importlib.import_module(f"tritonclient.{protocol}")
    except ImportError as e:
        raise BackendUnavailable("triton", f"the Triton {protocol} client is not installed ({e}); {INSTALL}") from None
    except RuntimeError as e:  # tritonclient raises this when an extra's packages are missing
        raise BackendUnavailable("triton", f"{str(e).splitlines()[0]}; {INSTALL}") from None


def _reason(e: BaseException) -> str:
    msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    text = " ".join(str(msg or type(e).__name__).split())
    return text[:400]


class TritonRunner(Runner):
    """One served classifier on a Triton server (see the module docstring)."""

    # ---- bench facts
    @classmethod
    def stream_instance_text(cls, backend: str, gpu: bool) -> str:
        return "its own Triton client connection (the server batches what the streams send)"

    def __init__(self, url: str, *, backend: str = "triton", precision: str | None = None, model: str | None = None,
                 protocol: str | None = None, timeout_s: float = 30.0, model_version: str = "", threads: int | None = None):
        super().__init__()
        if backend != "triton":
            raise UserError(f"unknown Triton backend {backend!r}")
        if timeout_s <= 0:
            raise UserError(f"the Triton timeout must be positive (got {timeout_s})")
        self.backend = backend
        self.url = str(url)
        self.protocol, self.address, in_url, url_version = parse_url(self.url, protocol)
        if model is not None and in_url is not None and model != in_url:
            raise UserError(f"Triton URL {url!r} names model {in_url!r}, but --model {model!r} was given")
        self.model = model or in_url
        self.model_version = str(model_version or url_version or "")
        self.precision = precision
        self.timeout_s = float(timeout_s)
        self.client: Any = None
        self.config: dict[str, Any] = {}
        self.server: dict[str, Any] = {}
        del threads  # (bench passes its CPU thread share; the server owns its threads)

    @property
    def where(self) -> str:
        return f"{self.protocol}://{self.address}"

    # ------------------------------------------------------------------ calls with a bounded time
    def _call(self, what: str, fn: str, *args: Any, **kw: Any) -> Any:
        if self.protocol == "grpc":
            kw["client_timeout"] = self.timeout_s
        try:
            return getattr(self.client, fn)(*args, **kw)
        except Exception as e:  # noqa: BLE001 - tritonclient, gevent, grpc and socket errors: one line each
            reason = _reason(e)
            if "timeout" in reason.lower() or "deadline" in reason.lower() or "timed out" in reason.lower() or \
                    type(e).__name__ in ("Timeout", "TimeoutError", "timeout"):
                raise UserError(f"Triton at {self.where} did not answer {what} within {self.timeout_s:g} s ({reason})") from None
            raise UserError(f"Triton at {self.where}: {what} failed: {reason}") from None

    def _connect(self) -> None:
        mod = import_client(self.protocol)
        try:
            if self.protocol == "http":
                self.client = mod.InferenceServerClient(self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
            else:
                self.client = mod.InferenceServerClient(self.address)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot make a Triton client for {self.where}: {_reason(e)}") from None
        try:
            live = self._call("whether it is live", "is_server_live")
        except UserError as e:
            raise BackendUnavailable("triton", f"no Triton server answers at {self.where}: {e}") from None
        if not live:
            raise BackendUnavailable("triton", f"the Triton server at {self.where} is not live")
        self.server = self._call("its metadata", "get_server_metadata", **self._json)

    @property
    def _json(self) -> dict[str, Any]:
        """gRPC answers protobuf messages unless asked for JSON; HTTP always answers JSON."""
        return {"as_json": True} if self.protocol == "grpc" else {}

    def _index(self) -> list[dict[str, Any]]:
        index = self._call("its model index", "get_model_repository_index", **self._json)
        if isinstance(index, dict):
            index = index.get("models", [])
        return [dict(m) for m in index]

    def _config(self, name: str) -> dict[str, Any]:
        cfg = self._call(f"the config of {name!r}", "get_model_config", name, self.model_version, **self._json)
        return cfg.get("config", cfg)

    def _choose_model(self, index: list[dict[str, Any]]) -> str:
        ready = [m["name"] for m in index if m.get("state") == "READY"]
        if self.model is not None:
            entry = [m for m in index if m.get("name") == self.model]
            if not entry:
                raise UserError(f"Triton at {self.where} has no model named {self.model!r}; it serves: {', '.join(ready) or 'nothing ready'}")
            states = {m.get("state") for m in entry}
            if "READY" not in states:
                m = entry[0]
                raise UserError(f"model {self.model!r} on Triton at {self.where} is not ready "
                                f"({m.get('state') or 'not loaded'}{': ' + m['reason'] if m.get('reason') else ''})")
            return self.model
        classifiers = [n for n in dict.fromkeys(ready) if _params(self._config(n)).get("role") == "classifier"]
        if len(classifiers) == 1:
            return classifiers[0]
        which = ", ".join(classifiers or ready) or "none"
        raise UserError(f"Triton at {self.where} serves {len(classifiers)} ready classifiers written by resnet-deploy "
                        f"({which}); pass --model NAME")

    def _open(self) -> InputSpec:
        self._connect()
        self.model = self._choose_model(self._index())
        self.config = cfg = self._config(self.model)
        inputs, outputs = cfg.get("input", []), cfg.get("output", [])
        if len(inputs) != 1 or not outputs:
            raise UserError(f"model {self.model!r} on {self.where} has {len(inputs)} inputs and {len(outputs)} outputs; "
                            "expected one image tensor in and logits out")
        inp = inputs[0]
        if inp.get("data_type") not in DTYPES:
            hint = " (it takes encoded images: give the classifier's name)" if inp.get("data_type") == "TYPE_STRING" else ""
            raise UserError(f"model {self.model!r} on {self.where} takes {inp.get('data_type')}, not a float image tensor{hint}")
        self.input_name, self.wire = inp["name"], WIRE[inp["data_type"]]
        self.output_name = outputs[0]["name"]
        dims = [int(d) for d in inp.get("dims", [])]
        mbs = int(cfg.get("max_batch_size", 0))
        if mbs > 0:
            return InputSpec(name=self.input_name, dtype=DTYPES[inp["data_type"]], sample_shape=tuple(dims), min_batch=1,
                             max_batch=mbs, source=f"{self.model} on {self.where}")
        if len(dims) != 4 or dims[0] < 1:
            raise UserError(f"model {self.model!r} on {self.where} has max_batch_size 0 and input dims {dims}; expected [N, C, H, W]")
        return InputSpec(name=self.input_name, dtype=DTYPES[inp["data_type"]], sample_shape=tuple(dims[1:]), min_batch=dims[0],
                         max_batch=dims[0], limit="fixed", source=f"{self.model} on {self.where}")

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a connection that already failed
                pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        mod = import_client(self.protocol)
        x = mod.InferInput(self.input_name, list(batch.shape), self.wire)
        x.set_data_from_numpy(batch)
        wanted = [mod.InferRequestedOutput(self.output_name)]
        result = self._call(f"inference on {self.model!r}", "infer", self.model, [x], model_version=self.model_version, outputs=wanted)
        out = result.as_numpy(self.output_name)
        if out is None:
            raise UserError(f"Triton at {self.where} returned no {self.output_name!r} from {self.model!r}")
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def served_endpoint(self) -> dict[str, str]:
        self._require_open()
        return {"address": self.address, "protocol": self.protocol, "model": self.model, "version": self.model_version}

    # ------------------------------------------------------------------ facts
    def facts(self) -> dict[str, str]:
        """The served model's ``resnet_deploy.*`` parameters (prefix removed), as an ONNX's metadata reads."""
        self._require_open()
        return {k: v for k, v in _params(self.config).items() if k not in ("role", "classifier", "recipe", "top")}

    @classmethod
    def served_facts(cls, url: str, **options: Any) -> dict[str, str]:
        """:meth:`facts` of the model ``options`` name on the server at ``url`` (a short connection of its own)."""
        with cls(url, **options) as r:
            return r.facts()

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        kinds = sorted({g.get("kind", "KIND_AUTO") for g in cfg.get("instance_group", [])})
        return {"backend": self.backend, "version": dist_version("tritonclient"), "device": "server",
                "url": self.where, "protocol": self.protocol, "model": self.model, "precision": self.precision,
                "server": {"name": self.server.get("name"), "version": self.server.get("version")},
                "platform": cfg.get("platform") or cfg.get("backend"), "max_batch_size": cfg.get("max_batch_size"),
                "instance_kinds": kinds, "timeout_s": self.timeout_s,
                "notes": [f"served by Triton {self.server.get('version')} at {self.where} ({cfg.get('platform') or cfg.get('backend')})"]
                if self.server else []}

    @classmethod
    def unavailable(cls, backend: str, precision: str) -> str | None:
        for protocol in PROTOCOLS:
            try:
                import_client(protocol)
            except BackendUnavailable as e:
                return e.reason
        return None


def _params(config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in (config.get("parameters") or {}).items():
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX):]] = value.get("string_value", "") if isinstance(value, dict) else str(value)
    return out


__all__ = ["PROTOCOLS", "TritonRunner", "parse_url"]
