"""The HTTP client of AI Flow's API (``/api/v1``), standard library only."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Generator, Iterator, List, Mapping, Optional, Union

from .errors import ApiError

#: The server used when neither ``url`` nor ``AIFLOW_URL`` names one.
DEFAULT_URL = "http://127.0.0.1:8080"

JSON = Dict[str, Any]


def _quote(segment: Union[str, int]) -> str:
    return urllib.parse.quote(str(segment), safe="")


def _with_execution(context: Any) -> Any:
    """Inside a job (``AIFLOW_EXECUTION`` set), names the job's execution in the context unless
    the caller named one; a context that is not an object is kept as it is (like the Rust
    SDK)."""
    execution = os.environ.get("AIFLOW_EXECUTION", "")
    if not execution:
        return context
    if context is None:
        return {"execution": execution}
    if isinstance(context, Mapping):
        merged = dict(context)
        merged.setdefault("execution", execution)
        return merged
    return context


class Client:
    """A connection to one AI Flow server.

    Args:
        url: the server, e.g. ``http://aiflow:8080`` (default: ``AIFLOW_URL``, else
            ``http://127.0.0.1:8080``). A trailing ``/api/v1`` is accepted.
        token: an API token, sent as ``Authorization: Bearer`` (default: ``AIFLOW_TOKEN``;
            none when empty).
        timeout: seconds to wait for an answer (and, in :meth:`listen`, for any byte of the
            stream; the server sends a heartbeat every 15 s).
        ca_cert: a PEM file of CA certificates trusted for an ``https://`` server besides the
            system's (default: ``AIFLOW_CA_CERT``, which jobs inherit from the server or worker).

    Inside a job the scheduler sets ``AIFLOW_URL``, ``AIFLOW_TOKEN`` and ``AIFLOW_EXECUTION``,
    so ``Client()`` needs no argument. Every method raises :class:`aiflow.ApiError` when the
    server answers with an error, and ``OSError`` (``urllib.error.URLError``) when it cannot be
    reached.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 30,
        ca_cert: Optional[str] = None,
    ) -> None:
        base = (url or os.environ.get("AIFLOW_URL") or DEFAULT_URL).rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        self.url: str = base
        self.token: Optional[str] = (
            token if token is not None else os.environ.get("AIFLOW_TOKEN")
        ) or None
        self.timeout: float = timeout
        ca = ca_cert if ca_cert is not None else os.environ.get("AIFLOW_CA_CERT")
        self._ssl: Optional[ssl.SSLContext] = None
        if base.startswith("https://") or ca:
            self._ssl = ssl.create_default_context()
            if ca:
                self._ssl.load_verify_locations(cafile=ca)

    def __repr__(self) -> str:
        return f"aiflow.Client({self.url!r})"

    # -----------------------------------------------------------------------------------------
    # plumbing

    def _headers(self, body: bool) -> Dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "aiflow-python"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _url(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        url = self.url + "/api/v1" + path
        if query:
            pairs = {k: str(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        return url

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        """Calls any route of the API and returns the decoded JSON answer (``None`` when empty).

        Args:
            method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
            path: the route below ``/api/v1``, e.g. ``/executions/ID``.
            body: anything ``json.dumps`` takes; sent as ``application/json``.
            query: query parameters; ``None`` values are left out.

        Raises:
            ApiError: the server answered with an error status.
        """
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(
            self._url(path, query),
            data=data,
            method=method,
            headers=self._headers(data is not None),
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ApiError.from_body(e.code, e.read(), method, path) from None
        if not raw.strip():
            return None
        return json.loads(raw.decode("utf-8"))

    # -----------------------------------------------------------------------------------------
    # events

    def send_event(
        self,
        key: str,
        value: str = "",
        event_type: Optional[str] = None,
        namespace: Optional[str] = None,
        context: Any = None,
        idempotency_key: Optional[str] = None,
        sender: Optional[str] = None,
    ) -> JSON:
        """Publishes an event and returns it as stored, with its ``offset``.

        Inside a job (``AIFLOW_EXECUTION`` set) the event's context names the job's execution
        (``context["execution"]``) unless the caller named one, so the scheduler routes it to
        that execution.

        Args:
            key: what the event is about, e.g. ``dataset/raw``.
            value: free text, e.g. a version number.
            event_type: e.g. ``DATA_LANDED`` (server default ``UNDEFINED``).
            namespace: server default ``default``.
            context: any JSON value, usually an object.
            idempotency_key: an event whose key is already stored is not stored again; the
                stored one is returned.
            sender: who sent it.
        """
        event: JSON = {"key": key, "value": value}
        if event_type is not None:
            event["event_type"] = event_type
        if namespace is not None:
            event["namespace"] = namespace
        if sender is not None:
            event["sender"] = sender
        context = _with_execution(context)
        if context is not None:
            event["context"] = context
        if idempotency_key is not None:
            event["idempotency_key"] = idempotency_key
        answer: JSON = self.request("POST", "/events", event)
        return answer

    def list_events(
        self,
        key: Optional[str] = None,
        namespace: Optional[str] = None,
        event_type: Optional[str] = None,
        after: int = 0,
        limit: int = 100,
    ) -> List[JSON]:
        """Stored events matching the filter with an offset above ``after``, oldest first (one
        page of at most ``limit``, 1..1000). ``key`` may hold ``*`` wildcards; ``event_type``
        may list several types separated by commas."""
        page: JSON = self.request(
            "GET",
            "/events",
            query={
                "key": key,
                "namespace": namespace,
                "event_type": event_type,
                "after": after,
                "limit": limit,
            },
        )
        items: List[JSON] = page["items"]
        return items

    def listen(
        self,
        key: Optional[str] = None,
        namespace: Optional[str] = None,
        event_type: Optional[str] = None,
        from_offset: Optional[int] = None,
        sender: Optional[str] = None,
        reconnect_delay: float = 1.0,
    ) -> Generator[JSON, None, None]:
        """Yields events as they arrive (``GET /events/stream``, Server-Sent Events).

        With ``from_offset`` the stored events from that offset on (inclusive; ``1`` replays
        everything) come first, then new ones live; without it, only events published after
        the stream opens. ``key`` may hold ``*`` wildcards; ``event_type`` may list several
        types separated by commas.

        A dropped connection is reopened after ``reconnect_delay`` seconds (doubling up to
        30 s while the server stays away), resuming after the last offset seen, so no event is
        lost or repeated. Errors other than ``429`` and ``5xx`` on opening the stream (a bad
        filter) raise :class:`ApiError`. The generator runs until the caller stops iterating.
        """
        query: Dict[str, Any] = {
            "key": key,
            "namespace": namespace,
            "event_type": event_type,
            "sender": sender,
        }
        last: Optional[int] = None
        delay = reconnect_delay
        while True:
            q = dict(query)
            headers = self._headers(False)
            headers["Accept"] = "text/event-stream"
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            elif from_offset is not None:
                q["from"] = from_offset
            req = urllib.request.Request(self._url("/events/stream", q), headers=headers)
            try:
                resp = urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl)
            except urllib.error.HTTPError as e:
                err = ApiError.from_body(e.code, e.read(), "GET", "/events/stream")
                if e.code != 429 and e.code < 500:
                    raise err from None
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except (OSError, http.client.HTTPException):
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                for kind, ident, data in _sse_messages(resp):
                    delay = reconnect_delay
                    if ident is not None:
                        try:
                            seen = int(ident)
                        except ValueError:
                            seen = None
                        if seen is not None and (kind != "message" or not data):
                            # The opening `id:` (where the stream starts) and the like.
                            last = seen
                    if kind != "message" or not data:
                        continue  # an `event: error` ends the stream: resume below
                    event: JSON = json.loads(data)
                    last = int(event.get("offset", last if last is not None else 0))
                    yield event
            except (OSError, http.client.HTTPException, socket.timeout):
                pass
            finally:
                resp.close()
            time.sleep(delay)
            delay = min(delay * 2, 30.0)

    # -----------------------------------------------------------------------------------------
    # workflows and executions

    def submit_workflow(self, doc: Any) -> JSON:
        """Submits an AI graph or a workflow document (a dict, or a
        :class:`aiflow.graph.GraphBuilder`) and returns what was stored: the workflow's name,
        its version and ``created`` (``False`` when the document was unchanged).

        Raises:
            ApiError: ``422`` with every problem of an invalid document.
        """
        if hasattr(doc, "to_dict"):
            doc = doc.to_dict()
        answer: JSON = self.request("POST", "/workflows", doc)
        return answer

    def start_execution(self, workflow: str) -> JSON:
        """Starts an execution of the workflow's latest version and returns it (its ``id``,
        ``state`` …)."""
        answer: JSON = self.request("POST", f"/workflows/{_quote(workflow)}/executions")
        return answer

    def get_execution(self, execution_id: str) -> JSON:
        """One workflow execution: ``state`` is ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or
        ``STOPPED``."""
        answer: JSON = self.request("GET", f"/executions/{_quote(execution_id)}")
        return answer

    def execution_jobs(self, execution_id: str) -> List[JSON]:
        """The job executions (attempts) of a workflow execution."""
        answer: Any = self.request("GET", f"/executions/{_quote(execution_id)}/jobs")
        if isinstance(answer, dict) and "items" in answer:
            items: List[JSON] = answer["items"]
            return items
        return list(answer or [])

    def wait(
        self, execution_id: str, timeout: Optional[float] = None, poll: float = 0.5
    ) -> JSON:
        """Waits until the execution is no longer ``RUNNING`` and returns it.

        Args:
            execution_id: the execution's ``id``.
            timeout: seconds to wait at most (default: no limit).
            poll: seconds between two looks.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            execution = self.get_execution(execution_id)
            if execution.get("state") != "RUNNING":
                return execution
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"execution {execution_id} still RUNNING after {timeout} s"
                )
            pause = poll
            if deadline is not None:
                pause = max(0.0, min(poll, deadline - time.monotonic()))
            time.sleep(pause)

    # -----------------------------------------------------------------------------------------
    # meta: metrics, models, aliases

    def log_metric(
        self,
        metric: str,
        key: str,
        value: float,
        step: int = 0,
        *,
        kind: str = "job",
        subject: Optional[str] = None,
        model_version: Optional[int] = None,
        job_execution: Optional[str] = None,
        timestamp: Optional[str] = None,
        project: Optional[str] = None,
    ) -> JSON:
        """Appends one point ``key=value`` at ``step`` to the metric called ``metric``, creating
        the metric first when it does not exist.

        Args:
            metric: the metric's name, e.g. ``fraud_quality``.
            key: what was measured, e.g. ``accuracy``.
            value: the measurement.
            step: e.g. the epoch.
            kind: when the metric is created: ``job``, ``model`` or ``dataset``.
            subject: when created: the model or dataset (must exist) or job it describes
                (default for ``job``: ``AIFLOW_JOB`` inside a job).
            model_version: the version number of the metric's model (kind ``model``).
            job_execution: the job execution that measured it (default inside a job:
                ``AIFLOW_JOB_EXECUTION``).
            timestamp: RFC 3339 (default: when the server receives it).
            project: when created: the project.

        Returns:
            the server's answer, ``{"written": 1}``.
        """
        point: JSON = {"key": key, "value": value, "step": step}
        if timestamp is not None:
            point["timestamp"] = timestamp
        if model_version is not None:
            point["model_version"] = model_version
        job_execution = job_execution or os.environ.get("AIFLOW_JOB_EXECUTION") or None
        if job_execution is not None:
            point["job_execution"] = job_execution
        path = f"/metrics/{_quote(metric)}/points"
        try:
            answer: JSON = self.request("POST", path, [point])
            return answer
        except ApiError as e:
            if e.status != 404:
                raise
        new: JSON = {"name": metric, "kind": kind}
        if subject is None and kind == "job":
            subject = os.environ.get("AIFLOW_JOB") or None
        if subject is not None:
            new["subject"] = subject
        if project is not None:
            new["project"] = project
        try:
            self.request("POST", "/metrics", new)
        except ApiError as e:
            if e.status != 409:  # created meanwhile by someone else
                raise
        answer = self.request("POST", path, [point])
        return answer

    def metric_points(self, metric: str, key: str, **query: Any) -> List[JSON]:
        """The points of ``key`` of a metric, by step: ``step``, ``value``, ``timestamp``,
        ``model_version`` … (one page; more filters: ``step_from``, ``step_to``,
        ``max_points``, ``limit``, ``cursor``)."""
        answer: JSON = self.request(
            "GET", f"/metrics/{_quote(metric)}/points", query={"key": key, **query}
        )
        points: List[JSON] = answer["points"]
        return points

    def create_model(
        self,
        name: str,
        project: Optional[str] = None,
        description: Optional[str] = None,
        exist_ok: bool = True,
    ) -> Optional[JSON]:
        """Registers a model; returns it, or ``None`` when it exists and ``exist_ok``."""
        body: JSON = {"name": name}
        if project is not None:
            body["project"] = project
        if description is not None:
            body["description"] = description
        try:
            answer: JSON = self.request("POST", "/models", body)
            return answer
        except ApiError as e:
            if exist_ok and e.status == 409:
                return None
            raise

    def register_model_version(
        self,
        model: str,
        uri: Optional[str] = None,
        status: str = "READY",
        *,
        description: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        tags: Optional[Mapping[str, str]] = None,
        source_job_execution: Optional[str] = None,
        input_dataset_versions: Optional[List[Mapping[str, Any]]] = None,
        create_model: bool = True,
        project: Optional[str] = None,
    ) -> JSON:
        """Registers a new version of ``model`` and returns it (its ``version`` number, ``id``
        …). The server publishes ``MODEL_VERSION_CREATED`` on ``model/<model>``, which starts
        the workflows waiting for it.

        Args:
            model: the model's name; registered first when missing and ``create_model``.
            uri: where the model's files are.
            status: ``PENDING``, ``READY`` or ``FAILED``.
            description, properties, tags: free-form.
            source_job_execution: the job execution that produced it (default inside a job:
                ``AIFLOW_JOB_EXECUTION``), for lineage.
            input_dataset_versions: the dataset versions it was trained on, e.g.
                ``[{"dataset": "features", "version": 3}]``.
            project: the project of a model created here.
        """
        body: JSON = {"status": status}
        if uri is not None:
            body["uri"] = uri
        if description is not None:
            body["description"] = description
        if properties is not None:
            body["properties"] = dict(properties)
        if tags:
            body["tags"] = dict(tags)
        source = source_job_execution or os.environ.get("AIFLOW_JOB_EXECUTION") or None
        if source is not None:
            body["source_job_execution"] = source
        if input_dataset_versions:
            body["input_dataset_versions"] = [dict(v) for v in input_dataset_versions]
        path = f"/models/{_quote(model)}/versions"
        try:
            answer: JSON = self.request("POST", path, body)
            return answer
        except ApiError as e:
            if not (create_model and e.status == 404):
                raise
        self.create_model(model, project=project)
        answer = self.request("POST", path, body)
        return answer

    def get_model_version(self, model: str, version: int) -> JSON:
        """One version of a model."""
        answer: JSON = self.request("GET", f"/models/{_quote(model)}/versions/{int(version)}")
        return answer

    def set_model_alias(self, model: str, alias: str, version: int) -> JSON:
        """Points ``alias`` (e.g. ``production``) of ``model`` at ``version``; the server keeps
        the history and publishes ``MODEL_ALIAS_MOVED``."""
        answer: JSON = self.request(
            "PUT",
            f"/models/{_quote(model)}/aliases/{_quote(alias)}",
            {"version": int(version)},
        )
        return answer

    def get_model_alias(self, model: str, alias: str, at: Optional[str] = None) -> JSON:
        """Where ``alias`` of ``model`` points: ``{"model", "alias", "version", "updated_at"}``;
        with ``at`` (RFC 3339), where it pointed then.

        Raises:
            ApiError: ``404`` when the alias does not exist (or did not at ``at``).
        """
        answer: JSON = self.request(
            "GET",
            f"/models/{_quote(model)}/aliases/{_quote(alias)}",
            query={"at": at},
        )
        return answer

    def get_model_version_by_alias(self, model: str, alias: str) -> JSON:
        """The model version ``alias`` points at now (e.g. the ``production`` one)."""
        found = self.get_model_alias(model, alias)
        return self.get_model_version(model, int(found["version"]))

    def alias_history(self, model: str, alias: str) -> List[JSON]:
        """Every move of ``alias``: ``from_version``, ``to_version`` (``None``: removed),
        ``moved_at``."""
        answer: Any = self.request(
            "GET", f"/models/{_quote(model)}/aliases/{_quote(alias)}/history"
        )
        if isinstance(answer, dict) and "items" in answer:
            items: List[JSON] = answer["items"]
            return items
        return list(answer or [])

    # -----------------------------------------------------------------------------------------
    # artifact files

    def upload_artifact(
        self,
        name: str,
        path: Union[str, "os.PathLike[str]"],
        *,
        uri: Optional[str] = None,
        kind: Optional[str] = None,
        project: Optional[str] = None,
    ) -> JSON:
        """Uploads the file at ``path`` as the content of artifact ``name``, streamed.

        The file's sha256 is computed first and sent in ``X-Checksum-Sha256``; the server
        refuses bytes that differ from it, or from the sha256 recorded on the artifact, and
        keeps nothing. Returns the artifact, its ``sha256`` and ``size`` now the file's.

        Args:
            name: the artifact; with ``uri`` given it is registered first when missing (with
                ``kind`` and ``project``).
            path: the file to upload.

        Raises:
            ApiError: ``404`` (no such artifact), ``413`` (over the server's
                ``--max-artifact-bytes``), ``422`` (``checksum_mismatch``).
        """
        size = os.path.getsize(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if uri is not None:
            body: JSON = {"name": name, "uri": uri}
            if kind is not None:
                body["kind"] = kind
            if project is not None:
                body["project"] = project
            try:
                self.request("POST", "/artifacts", body)
            except ApiError as e:
                if e.status != 409:  # 409: registered already
                    raise
        route = f"/artifacts/{_quote(name)}/content"
        headers = self._headers(False)
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(size)
        headers["X-Checksum-Sha256"] = digest.hexdigest()
        with open(path, "rb") as f:
            req = urllib.request.Request(self._url(route), data=f, method="PUT", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                    answer: JSON = json.loads(resp.read().decode("utf-8"))
                    return answer
            except urllib.error.HTTPError as e:
                raise ApiError.from_body(e.code, e.read(), "PUT", route) from None

    def download_artifact(self, name: str, path: Union[str, "os.PathLike[str]"]) -> int:
        """Downloads the content of artifact ``name`` into ``path``, streamed: written beside it
        first, checked against the sha256 the server recorded, then moved into place (a failed
        download leaves ``path`` as it was). Returns the number of bytes.

        Raises:
            ApiError: ``404`` when the artifact does not exist or has no content.
            ValueError: the bytes do not have the recorded sha256.
        """
        route = f"/artifacts/{_quote(name)}/content"
        headers = self._headers(False)
        headers["Accept"] = "application/octet-stream"
        req = urllib.request.Request(self._url(route), method="GET", headers=headers)
        target = os.fspath(path)
        tmp = os.path.join(
            os.path.dirname(os.path.abspath(target)), f".{os.path.basename(target)}.part"
        )
        digest = hashlib.sha256()
        n = 0
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                want = (resp.headers.get("X-Checksum-Sha256") or "").lower()
                with open(tmp, "wb") as out:
                    for block in iter(lambda: resp.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                        n += len(block)
        except urllib.error.HTTPError as e:
            raise ApiError.from_body(e.code, e.read(), "GET", route) from None
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        if want and want != digest.hexdigest():
            os.remove(tmp)
            raise ValueError(
                f"artifact {name!r}: the downloaded bytes have sha256 {digest.hexdigest()}, "
                f"the server recorded {want}"
            )
        os.replace(tmp, target)
        return n


def _sse_messages(resp: Any) -> Iterator["tuple[str, Optional[str], str]"]:
    """Parses a ``text/event-stream``: yields ``(event type, id or None, data)`` per message
    (blank-line separated); comments (``: heartbeat``) are skipped."""
    kind = "message"
    ident: Optional[str] = None
    data: List[str] = []
    seen_field = False
    while True:
        raw = resp.readline()
        if not raw:
            return  # the server closed the stream
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if seen_field:
                yield kind, ident, "\n".join(data)
            kind, ident, data, seen_field = "message", None, [], False
            continue
        if line.startswith(":"):
            continue
        name, _, val = line.partition(":")
        if val.startswith(" "):
            val = val[1:]
        seen_field = True
        if name == "data":
            data.append(val)
        elif name == "id":
            ident = val
        elif name == "event":
            kind = val or "message"
