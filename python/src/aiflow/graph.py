"""Build AI graphs in Python: the same JSON document as the Rust SDK's ``GraphBuilder``.

>>> from aiflow.graph import Event, GraphBuilder, Op
>>> g = GraphBuilder("fraud")
>>> _ = g.project("demo")
>>> _ = g.node("ingest").op(Op.INGEST).command(["python3", "ingest.py"]).retries(2)
>>> _ = g.node("train").op(Op.TRAIN).command(["python3", "train.py"]).timeout_s(3600)
>>> _ = g.node("serve").op(Op.PREDICT).command(["python3", "serve.py"]).streaming()
>>> _ = g.data_edge("ingest", "train")
>>> g.on(Event.key("model/fraud").of_type("MODEL_VERSION_CREATED")).restart("serve")
>>> _ = g.cron("0 */6 * * *", "UTC")
>>> len(g.build()["nodes"])
3

The server checks a submitted graph fully (``Client.submit_workflow`` raises ``ApiError`` 422
listing every problem); :meth:`GraphBuilder.build` checks only the names edges refer to.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Union

JSON = Dict[str, Any]

DEFAULT_NAMESPACE = "default"


class Op:
    """The ML operation a node performs (any other word is kept as it is)."""

    READ_DATASET = "read_dataset"
    WRITE_DATASET = "write_dataset"
    INGEST = "ingest"
    TRANSFORM = "transform"
    TRAIN = "train"
    EVALUATE = "evaluate"
    VALIDATE = "validate"
    PUSH = "push"
    PREDICT = "predict"
    #: Anything else the user's command does (the default).
    CUSTOM = "custom"


class Action:
    """What a rule does to its job when its condition is met."""

    START = "START"
    STOP = "STOP"
    RESTART = "RESTART"
    NONE = "NONE"


class Status:
    """A job status a condition can wait for; ``FINISHED`` is any terminal state."""

    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    FINISHED = "FINISHED"


def _drop_none(d: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in d.items() if v is not None}


class Event:
    """An event pattern: ``Event.key("model/fraud").of_type("MODEL_VERSION_CREATED")``.

    ``key`` may hold ``*`` wildcards; the other fields, when given, must equal the event's.
    """

    def __init__(
        self,
        key: str,
        event_type: Optional[str] = None,
        namespace: Optional[str] = None,
        value: Optional[str] = None,
        sender: Optional[str] = None,
    ) -> None:
        self._key = key
        self._event_type = event_type
        self._namespace = namespace
        self._value = value
        self._sender = sender

    @classmethod
    def key(cls, key: str) -> "Event":
        """Matches events whose key matches ``key``."""
        return cls(key)

    def of_type(self, event_type: str) -> "Event":
        """Only events of this type."""
        self._event_type = event_type
        return self

    def in_namespace(self, namespace: str) -> "Event":
        """Only events of this namespace."""
        self._namespace = namespace
        return self

    def with_value(self, value: str) -> "Event":
        """Only events with this value."""
        self._value = value
        return self

    def from_sender(self, sender: str) -> "Event":
        """Only events of this sender."""
        self._sender = sender
        return self

    def to_dict(self) -> JSON:
        """The pattern as in the document: ``{"key", "namespace", "value", "event_type",
        "sender"}`` with unset fields left out."""
        return _drop_none(
            {
                "key": self._key,
                "namespace": self._namespace,
                "value": self._value,
                "event_type": self._event_type,
                "sender": self._sender,
            }
        )


class Condition:
    """When a control edge fires: an event, a job status, or ``all_of`` / ``any_of`` parts."""

    def __init__(self, doc: JSON) -> None:
        self._doc = doc

    @staticmethod
    def of(condition: "ConditionLike") -> "Condition":
        """A condition from an :class:`Event`, a :class:`Condition` or its document."""
        if isinstance(condition, Condition):
            return condition
        if isinstance(condition, Event):
            return Condition({"event": condition.to_dict()})
        return Condition(dict(condition))

    @staticmethod
    def job_status(node: str, status: str) -> "Condition":
        """Met when the job holding ``node`` reaches ``status`` (see :class:`Status`)."""
        return Condition({"job_status": {"node": node, "status": status}})

    @staticmethod
    def all_of(parts: Iterable["ConditionLike"]) -> "Condition":
        """Every part has been met since the rule last fired (in any order)."""
        return Condition({"all_of": [Condition.of(p).to_dict() for p in parts]})

    @staticmethod
    def any_of(parts: Iterable["ConditionLike"]) -> "Condition":
        """Any part is met."""
        return Condition({"any_of": [Condition.of(p).to_dict() for p in parts]})

    def to_dict(self) -> JSON:
        """The condition as in the document."""
        return self._doc


ConditionLike = Union[Event, Condition, Mapping[str, Any]]


class NodeBuilder:
    """Settings of one node and of the job it belongs to; every method returns the builder."""

    _JOB_ORDER = (
        "name",
        "command",
        "env",
        "working_dir",
        "timeout_s",
        "retries",
        "retry_backoff_s",
        "streaming",
        "queue",
        "resources",
        "priority",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self._op = Op.CUSTOM
        self._description: Optional[str] = None
        self._properties: Optional[Any] = None
        self._job: JSON = {}

    def op(self, op: str) -> "NodeBuilder":
        """The ML operation (see :class:`Op`)."""
        self._op = op
        return self

    def description(self, description: str) -> "NodeBuilder":
        self._description = description
        return self

    def command(self, argv: Iterable[str]) -> "NodeBuilder":
        """The program and its arguments; no shell (use ``["sh", "-c", "…"]`` for one)."""
        self._job["command"] = [str(a) for a in argv]
        return self

    def env(self, key: str, value: str) -> "NodeBuilder":
        self._job.setdefault("env", {})[key] = value
        return self

    def envs(self, variables: Mapping[str, str]) -> "NodeBuilder":
        self._job.setdefault("env", {}).update(variables)
        return self

    def working_dir(self, directory: str) -> "NodeBuilder":
        self._job["working_dir"] = directory
        return self

    def timeout_s(self, seconds: int) -> "NodeBuilder":
        self._job["timeout_s"] = int(seconds)
        return self

    def retries(self, n: int) -> "NodeBuilder":
        self._job["retries"] = int(n)
        return self

    def retry_backoff_s(self, seconds: int) -> "NodeBuilder":
        self._job["retry_backoff_s"] = int(seconds)
        return self

    def streaming(self) -> "NodeBuilder":
        """The job runs until it is stopped (a server, a stream processor)."""
        self._job["streaming"] = True
        return self

    def queue(self, queue: str) -> "NodeBuilder":
        """Which workers take the job."""
        self._job["queue"] = queue
        return self

    def resources(
        self,
        cpus: Optional[float] = None,
        memory_mb: Optional[int] = None,
        gpus: Optional[int] = None,
    ) -> "NodeBuilder":
        self._job["resources"] = _drop_none(
            {"cpus": cpus, "memory_mb": memory_mb, "gpus": gpus}
        )
        return self

    def priority(self, priority: int) -> "NodeBuilder":
        """Higher runs first when jobs wait for a slot."""
        self._job["priority"] = int(priority)
        return self

    def job_name(self, name: str) -> "NodeBuilder":
        """Names the job this node belongs to (default: its first node in data order)."""
        self._job["name"] = name
        return self

    def properties(self, properties: Any) -> "NodeBuilder":
        """Free-form settings for the node's program (passed through untouched)."""
        self._properties = properties
        return self

    def to_dict(self) -> JSON:
        """The node as in the document."""
        node: JSON = {"name": self.name, "op": self._op}
        if self._description is not None:
            node["description"] = self._description
        job = {k: self._job[k] for k in self._JOB_ORDER if self._job.get(k) not in (None, {})}
        if job:
            node["job"] = job
        if self._properties is not None:
            node["properties"] = self._properties
        return node


class RuleBuilder:
    """A control edge waiting for its action: ``.start(node)``, ``.stop``, ``.restart``."""

    def __init__(self, graph: "GraphBuilder", condition: Condition) -> None:
        self._graph = graph
        self._condition = condition
        self._life = "REPEATED"

    def once(self) -> "RuleBuilder":
        """Fire at most once per execution."""
        self._life = "ONCE"
        return self

    def start(self, node: str) -> None:
        self.action(Action.START, node)

    def stop(self, node: str) -> None:
        self.action(Action.STOP, node)

    def restart(self, node: str) -> None:
        self.action(Action.RESTART, node)

    def action(self, action: str, node: str) -> None:
        """Adds the control edge with any action (see :class:`Action`)."""
        self._graph._control_edges.append(
            {
                "to": node,
                "action": action,
                "life": self._life,
                "condition": self._condition.to_dict(),
            }
        )


class StatusBuilder:
    """Chooses the status a :meth:`GraphBuilder.after` rule waits for."""

    def __init__(self, graph: "GraphBuilder", node: str) -> None:
        self._graph = graph
        self._node = node

    def status(self, status: str) -> RuleBuilder:
        return RuleBuilder(self._graph, Condition.job_status(self._node, status))

    def succeeded(self) -> RuleBuilder:
        return self.status(Status.SUCCEEDED)

    def failed(self) -> RuleBuilder:
        return self.status(Status.FAILED)

    def finished(self) -> RuleBuilder:
        return self.status(Status.FINISHED)

    def started(self) -> RuleBuilder:
        return self.status(Status.STARTED)

    def stopped(self) -> RuleBuilder:
        return self.status(Status.STOPPED)


class GraphError(ValueError):
    """A graph refers to nodes it does not have; ``problems`` lists ``(location, message)``."""

    def __init__(self, problems: List["tuple[str, str]"]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s): "
            + "; ".join(f"{where}: {what}" for where, what in problems)
        )


class GraphBuilder:
    """Builds an AI graph, the document ``POST /workflows`` and ``--dags`` read.

    Args:
        name: the workflow's name (letters, digits, ``_``, ``-``, ``.``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._project: Optional[str] = None
        self._namespace = DEFAULT_NAMESPACE
        self._description: Optional[str] = None
        self._nodes: List[NodeBuilder] = []
        self._data_edges: List[JSON] = []
        self._control_edges: List[JSON] = []
        self._triggers: List[JSON] = []
        self._max_concurrent_jobs: Optional[int] = None
        self._max_duration_s: Optional[int] = None
        self._finish_on: Optional[JSON] = None

    def project(self, project: str) -> "GraphBuilder":
        self._project = project
        return self

    def namespace(self, namespace: str) -> "GraphBuilder":
        self._namespace = namespace
        return self

    def description(self, description: str) -> "GraphBuilder":
        self._description = description
        return self

    def max_concurrent_jobs(self, n: int) -> "GraphBuilder":
        """At most this many jobs of one execution run at once."""
        self._max_concurrent_jobs = int(n)
        return self

    def max_duration(self, seconds: float) -> "GraphBuilder":
        """An execution still running after this many seconds is stopped."""
        self._max_duration_s = max(1, int(seconds))
        return self

    def finish_on(self, condition: ConditionLike) -> "GraphBuilder":
        """Once ``condition`` is met in an execution, its control edges take no more actions
        and the execution ends when its running jobs have ended."""
        self._finish_on = Condition.of(condition).to_dict()
        return self

    def node(self, name: str) -> NodeBuilder:
        """The node called ``name``, added if new; chain its settings."""
        for n in self._nodes:
            if n.name == name:
                return n
        node = NodeBuilder(name)
        self._nodes.append(node)
        return node

    def data_edge(self, source: str, target: str) -> "GraphBuilder":
        """``target`` reads what ``source`` writes: both run in one job, ``source`` first."""
        self._data_edges.append({"from": source, "to": target})
        return self

    def on(self, condition: ConditionLike) -> RuleBuilder:
        """A control edge whose condition is ``condition``; finish with ``.start(node)`` and
        the like."""
        return RuleBuilder(self, Condition.of(condition))

    def after(self, node: str) -> StatusBuilder:
        """A control edge on the status of the job holding ``node``."""
        return StatusBuilder(self, node)

    def cron(self, expr: str, timezone: str = "UTC") -> "GraphBuilder":
        """Starts an execution on a cron schedule (5 fields, or 6–7 with seconds)."""
        return self.trigger({"cron": expr, "timezone": timezone})

    def interval(self, seconds: float) -> "GraphBuilder":
        """Starts an execution every ``seconds``."""
        return self.trigger({"interval_s": max(1, int(seconds))})

    def trigger_on(self, event: Event) -> "GraphBuilder":
        """Starts an execution when a matching event arrives."""
        return self.trigger({"event": event.to_dict()})

    def trigger(self, trigger: Mapping[str, Any]) -> "GraphBuilder":
        """Adds any trigger document (e.g. ``all_of`` a cron tick and an event)."""
        self._triggers.append(dict(trigger))
        return self

    def to_dict(self) -> JSON:
        """The graph as built so far, unchecked, as the JSON document (a dict)."""
        doc: JSON = {"name": self.name}
        if self._project is not None:
            doc["project"] = self._project
        if self._namespace != DEFAULT_NAMESPACE:
            doc["namespace"] = self._namespace
        if self._description is not None:
            doc["description"] = self._description
        doc["nodes"] = [n.to_dict() for n in self._nodes]
        if self._data_edges:
            doc["data_edges"] = [dict(e) for e in self._data_edges]
        if self._control_edges:
            doc["control_edges"] = [dict(e) for e in self._control_edges]
        if self._triggers:
            doc["triggers"] = [dict(t) for t in self._triggers]
        if self._max_concurrent_jobs is not None:
            doc["max_concurrent_jobs"] = self._max_concurrent_jobs
        if self._max_duration_s is not None:
            doc["max_duration_s"] = self._max_duration_s
        if self._finish_on is not None:
            doc["finish_on"] = self._finish_on
        return doc

    def build(self) -> JSON:
        """Checks that every edge names a node of the graph and returns the document.

        Raises:
            GraphError: listing every such problem.
        """
        names = {n.name for n in self._nodes}
        problems: List["tuple[str, str]"] = []
        if not self._nodes:
            problems.append(("nodes", "a graph needs at least one node"))
        seen: Set[str] = set()
        for i, n in enumerate(self._nodes):
            if n.name in seen:
                problems.append((f"nodes[{i}].name", f"duplicate node name {n.name!r}"))
            seen.add(n.name)
        for i, e in enumerate(self._data_edges):
            for end in ("from", "to"):
                if e[end] not in names:
                    problems.append((f"data_edges[{i}].{end}", f"no node {e[end]!r}"))
        for i, c in enumerate(self._control_edges):
            if c["to"] not in names:
                problems.append((f"control_edges[{i}].to", f"no node {c['to']!r}"))
            for where, node in _status_nodes(c["condition"], "condition"):
                if node not in names:
                    problems.append((f"control_edges[{i}].{where}", f"no node {node!r}"))
        if problems:
            raise GraphError(problems)
        return self.to_dict()

    def to_json(self) -> str:
        """The document as pretty JSON with a trailing newline, like the Rust SDK writes it."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _status_nodes(condition: Mapping[str, Any], where: str) -> List["tuple[str, str]"]:
    out: List["tuple[str, str]"] = []
    if "job_status" in condition:
        out.append((f"{where}.job_status.node", condition["job_status"]["node"]))
    for group in ("all_of", "any_of"):
        for i, part in enumerate(condition.get(group, [])):
            out.extend(_status_nodes(part, f"{where}.{group}[{i}]"))
    return out
