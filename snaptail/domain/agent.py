"""The ``Agent`` aggregate: one conversation, thread or automation, event-sourced."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from snaptail.domain.definition import check_state_defaults
from snaptail.domain.guard import apply_new_event, check_created, refuse_if_broken
from snaptail.domain.handler_reads import ignored_names
from snaptail.domain.memory import MIB, MemoryUsage, measure_agent
from snaptail.domain.recent import RecentEvents
from snaptail.domain.schema import snapshot_settings
from snaptail.domain.state import AgentState
from snaptail.domain.validation import check_payload
from snaptail.domain.values import (
    Approval,
    InputItem,
    InputKind,
    OutputItem,
    OutputKind,
    Participant,
    TokenUsage,
    ToolCall,
)
from snaptail.errors import AgentLimitExceeded, InvalidCommand, InvalidEventPayload


class Agent(Aggregate):
    """An LLM agent whose state is derived from its events.

    Commands (the public methods) check their arguments and record one event each;
    the event's ``apply`` (the decorated private method) updates :attr:`state`.
    Every part of :attr:`state` is bounded; the full transcript stays in the store.

    Class attributes configure a type of agent (override them in a subclass):
    ``State`` (the dataclass of derived state), ``window_items``/``window_bytes``
    (the conversation window), ``idempotency_window`` (how many webhook keys are
    remembered for de-duplication), ``max_labels``, ``max_metadata_keys``,
    ``max_participants``, ``max_pending`` (bounds on those collections),
    ``max_event_bytes`` (encoded payload limit per event), ``snapshot_version``
    (bump it to invalidate every stored snapshot of this type), ``snapshot_settings``
    and ``snapshot_ignore`` (names added to, or left out of, the settings that shape
    derived state: the snapshot fingerprint covers every plain value the event
    handlers read, found from their code; see ``snaptail.snapshots.fingerprint``) and
    ``memory_budget``
    (bytes or a size such as ``"2MiB"`` a loaded agent of this type may hold; it
    wins over the store's ``memory_budget``; None: the store's) and ``snapshot_policy``
    (a snapshot policy for this type, such as ``GrowWithState()`` for a state that
    grows without bound; a store's ``policies`` entry for the type wins over it;
    None: the store's ``policy``).
    """


    if TYPE_CHECKING:
        # The event classes @event defines below, declared for type checkers only (a
        # class-level annotation at run time would make eventsourcing build a dataclass).
        WindowShrunk: ClassVar[type[Any]]
        SystemPromptSet: ClassVar[type[Any]]
        ModelOptionsSet: ClassVar[type[Any]]
        MetadataSet: ClassVar[type[Any]]
        LabelSet: ClassVar[type[Any]]
        ParticipantJoined: ClassVar[type[Any]]
        ParticipantLeft: ClassVar[type[Any]]
        InputItemAdded: ClassVar[type[Any]]
        OutputItemAdded: ClassVar[type[Any]]
        ContextCompacted: ClassVar[type[Any]]
        LlmRequestStarted: ClassVar[type[Any]]
        LlmRequestFinished: ClassVar[type[Any]]
        LlmRequestCancelled: ClassVar[type[Any]]
        ToolCallRequested: ClassVar[type[Any]]
        ToolCallCompleted: ClassVar[type[Any]]
        ToolApprovalRequested: ClassVar[type[Any]]
        ToolApprovalDecided: ClassVar[type[Any]]
        Paused: ClassVar[type[Any]]
        Resumed: ClassVar[type[Any]]
        ErrorRecorded: ClassVar[type[Any]]
        WebhookReceived: ClassVar[type[Any]]

    State = AgentState
    window_items = 50
    window_bytes = 64 * 1024
    idempotency_window = 1000
    max_labels = 256
    max_metadata_keys = 256
    max_participants = 1000
    max_pending = 1000
    tool_output_preview = 2048
    max_event_bytes = MIB
    # Declared here with the values eventsourcing and snaptail assume when a type has
    # none (each load reads both: a missing class attribute costs a raised and
    # discarded AttributeError per read).
    class_version = 1
    snapshot_version = 1
    snapshot_ignore = cast("tuple[str, ...]", ())
    # Settings read by event handlers (they shape derived state); the max_* limits and
    # max_event_bytes are checked by commands only and are not listed.
    snapshot_settings = cast(
        "tuple[str, ...]",
        ("window_items", "window_bytes", "idempotency_window", "tool_output_preview"),
    )
    memory_budget = cast("int | str | None", None)
    # A snaptail.snapshots policy (typed Any: the domain does not import snapshots).
    snapshot_policy = cast("Any", None)

    # -- construction ---------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        annotations = inspect.get_annotations(cls)
        if annotations:
            raise TypeError(
                f"{cls.__qualname__}: annotated class attributes {sorted(annotations)} are not"
                " allowed on an agent type (eventsourcing would turn it into a dataclass and"
                " change its constructor). Declare state fields on a dataclass subclass of"
                " AgentState and set `State = ThatClass`; for type checkers, annotate inside"
                " `if TYPE_CHECKING:`."
            )
        super().__init_subclass__(**kwargs)
        snapshot_settings(cls)  # a misspelt setting fails here, not at the first snapshot
        ignored_names(cls)  # so does a snapshot_ignore that is not a tuple of names
        check_state_defaults(cls)  # a default of another type fails here, not at a snapshot
        policy = cls.snapshot_policy
        if policy is not None and not callable(getattr(policy, "should_snapshot", None)):
            raise TypeError(
                f"{cls.__qualname__}.snapshot_policy: {policy!r} is not a snapshot policy"
                " (no should_snapshot method); give one of snaptail.snapshots' policies,"
                " or None for the store's"
            )

    @event("Created")
    def __init__(self, name: str, system_prompt: str = "", model: str = "") -> None:
        self.state = self.new_state()
        self.state.name = name
        self.state.system_prompt = system_prompt
        self.state.model = model

    def new_state(self) -> AgentState:
        """A fresh, empty state for this agent type (window sized from the class)."""
        state = type(self).State()
        state.window.max_items = type(self).window_items
        state.window.max_bytes = type(self).window_bytes
        return state

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:
        agent_id = id if id is not None else uuid4()
        fresh = check_payload(agent_id, event_class, kwargs, cls.max_event_bytes)
        if fresh is not None:
            kwargs.update(fresh())  # the handler's copy, not the caller's objects
        agent = super()._create(event_class, id=agent_id, **kwargs)
        if fresh is not None:
            vars(agent.pending_events[0]).update(fresh())  # the event's own copy
        check_created(agent, agent.pending_events[0])
        return agent

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        """Record a new event: refuse if this object is broken, check the payload,
        apply the event (a handler that raises breaks the object, see
        ``snaptail.domain.guard``), then add it to the pending events. The handler
        and the event get separate copies of the payload's mutable values (see
        ``check_payload``)."""
        refuse_if_broken(self)
        fresh = check_payload(self.id, event_class, kwargs, type(self).max_event_bytes)
        if fresh is not None:
            kwargs.update(fresh())  # the handler's copy, not the caller's objects
        kwargs.update(originator_id=self.id, originator_version=self.version + 1)
        if kwargs.get("timestamp") is None:
            kwargs["timestamp"] = event_class.create_timestamp()
        try:
            new_event = event_class(**kwargs)
        except TypeError as exc:
            raise TypeError(f"cannot construct event {event_class.__qualname__}: {exc}") from None
        apply_new_event(self, new_event)
        if fresh is not None:  # the event's own copy: what the handler kept is not it
            vars(new_event).update(fresh())
        self._pending_events.append(new_event)

    # -- read-only views ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def status(self) -> str:
        """``paused``, ``thinking`` (LLM request in flight), ``awaiting_approval``,
        ``running_tools`` or ``idle``."""
        s = self.state
        if s.paused:
            return "paused"
        if s.llm_request is not None:
            return "thinking"
        if s.pending_approvals:
            return "awaiting_approval"
        if s.pending_tool_calls:
            return "running_tools"
        return "idle"

    @property
    def last_activity(self) -> datetime:
        return self.modified_on

    @property
    def recent_events(self) -> RecentEvents:
        """The newest stored events of this agent, oldest first (bounded)."""
        recent = self.__dict__.get("_recent_events")
        if recent is None:
            recent = RecentEvents(0)
            self.__dict__["_recent_events"] = recent
        return cast(RecentEvents, recent)

    @recent_events.setter
    def recent_events(self, recent: RecentEvents) -> None:
        self.__dict__["_recent_events"] = recent

    # -- memory ---------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Bytes this loaded agent holds: derived state, the recent-event cache and
        unsaved events, counted deeply (method and error: ``snaptail.domain.memory``)."""
        return measure_agent(self).total

    def memory_usage(self) -> MemoryUsage:
        """:meth:`memory_bytes` with its breakdown: which part holds the bytes."""
        return measure_agent(self)

    def shed_memory(self, target_bytes: int) -> None:
        """Make the derived state smaller, aiming at ``memory_bytes() <= target_bytes``.

        Called by the store when the agent is over its memory budget, after the
        recent-event cache was shrunk. Shed state only by recording events, so that
        snapshot + tail == full replay still holds. The default halves the
        conversation window (one ``WindowShrunk`` event each time) until the agent
        fits or one item is left. Override it to shed your own state, and call
        ``super().shed_memory(target_bytes)`` to shed the window too.
        """
        window = self.state.window
        while self.memory_bytes() > target_bytes and len(window.items) > 1:
            self.shrink_window(len(window.items) // 2)

    def shrink_window(self, max_items: int) -> None:
        """Keep at most ``max_items`` conversation items from now on (an event)."""
        if max_items < 1:
            raise InvalidCommand(self.id, f"max_items must be >= 1, got {max_items}")
        self._window_shrunk(max_items=max_items)

    @event("WindowShrunk")
    def _window_shrunk(self, max_items: int) -> None:
        self.state.window.shrink(max_items)

    # -- configuration --------------------------------------------------------------

    def set_system_prompt(self, prompt: str) -> None:
        self._system_prompt_set(prompt=prompt)

    @event("SystemPromptSet")
    def _system_prompt_set(self, prompt: str) -> None:
        self.state.system_prompt = prompt

    def set_model_options(self, model: str, options: Mapping[str, Any] | None = None) -> None:
        if options is not None:
            self._require_type("ModelOptionsSet", "options", options, Mapping, "a mapping")
        self._model_options_set(model=model, options=dict(options or {}))

    @event("ModelOptionsSet")
    def _model_options_set(self, model: str, options: dict[str, Any]) -> None:
        self.state.model = model
        self.state.model_options = options

    def set_metadata(self, key: str, value: str) -> None:
        metadata = self.state.metadata
        if key not in metadata and len(metadata) >= type(self).max_metadata_keys:
            raise AgentLimitExceeded(self.id, "metadata", type(self).max_metadata_keys)
        self._metadata_set(key=key, value=value)

    @event("MetadataSet")
    def _metadata_set(self, key: str, value: str) -> None:
        self.state.metadata[key] = value

    def add_label(self, label: str) -> None:
        labels = self.state.labels
        if label in labels:
            return
        if len(labels) >= type(self).max_labels:
            raise AgentLimitExceeded(self.id, "labels", type(self).max_labels)
        self._label_set(label=label, present=True)

    def remove_label(self, label: str) -> None:
        if label in self.state.labels:
            self._label_set(label=label, present=False)

    @event("LabelSet")
    def _label_set(self, label: str, present: bool) -> None:
        labels = self.state.labels
        if present and label not in labels:
            labels.append(label)
            labels.sort()
        elif not present and label in labels:
            labels.remove(label)

    # -- participants ---------------------------------------------------------------

    def join(self, participant: Participant) -> None:
        self._require_type(
            "ParticipantJoined", "participant", participant, Participant, "a Participant"
        )
        people = self.state.participants
        if participant.user_id not in people and len(people) >= type(self).max_participants:
            raise AgentLimitExceeded(self.id, "participants", type(self).max_participants)
        self._participant_joined(participant=participant)

    @event("ParticipantJoined")
    def _participant_joined(self, participant: Participant) -> None:
        self.state.participants[participant.user_id] = participant

    def leave(self, user_id: str) -> None:
        if user_id not in self.state.participants:
            raise InvalidCommand(self.id, f"participant {user_id!r} has not joined")
        self._participant_left(user_id=user_id)

    @event("ParticipantLeft")
    def _participant_left(self, user_id: str) -> None:
        self.state.participants.pop(user_id, None)

    # -- conversation ---------------------------------------------------------------

    def add_input(
        self, kind: InputKind, text: str, author: str = "", file_ref: str | None = None
    ) -> int:
        """Record an input item; returns its version (its reference in the log)."""
        self._input_added(item=InputItem(kind=kind, text=text, author=author, file_ref=file_ref))
        return self.version

    @event("InputItemAdded")
    def _input_added(self, item: InputItem) -> None:
        role = "user" if item.kind == "user" else item.kind
        self.state.window.add(self.version + 1, role, item.text)

    def add_output(self, kind: OutputKind, text: str) -> int:
        """Record an item the model produced; returns its version."""
        self._output_added(item=OutputItem(kind=kind, text=text))
        return self.version

    @event("OutputItemAdded")
    def _output_added(self, item: OutputItem) -> None:
        self.state.window.add(self.version + 1, item.kind, item.text)

    def compact_context(self, summary: str, through_version: int) -> None:
        """Replace the window's items up to ``through_version`` by ``summary``."""
        if not 0 < through_version <= self.version:
            raise InvalidCommand(
                self.id, f"through_version {through_version} is not in 1..{self.version}"
            )
        self._context_compacted(summary=summary, through_version=through_version)

    @event("ContextCompacted")
    def _context_compacted(self, summary: str, through_version: int) -> None:
        self.state.window.compact(summary, through_version)

    # -- LLM requests ---------------------------------------------------------------

    def start_llm_request(self, request_id: UUID | None = None, model: str = "") -> UUID:
        """Record that a request to the model started. The request is recorded by
        reference (the version its input runs through and item counts), never copied."""
        if self.state.paused:
            raise InvalidCommand(self.id, "LLM requests are paused")
        if self.state.llm_request is not None:
            raise InvalidCommand(self.id, f"LLM request {self.state.llm_request} is in flight")
        request_id = request_id or uuid4()
        window = self.state.window
        self._llm_request_started(
            request_id=request_id,
            model=model or self.state.model,
            input_through_version=self.version,
            input_items=len(window.items),
            tool_count=len(self.state.pending_tool_calls),
        )
        return request_id

    @event("LlmRequestStarted")
    def _llm_request_started(
        self,
        request_id: UUID,
        model: str,
        input_through_version: int,
        input_items: int,
        tool_count: int,
    ) -> None:
        self.state.llm_request = request_id
        self.state.usage.llm_requests += 1

    def finish_llm_request(
        self, request_id: UUID, usage: TokenUsage, stop_reason: str = "stop"
    ) -> None:
        self._require_request(request_id)
        self._require_type("LlmRequestFinished", "usage", usage, TokenUsage, "a TokenUsage")
        for name in ("input_tokens", "output_tokens", "cached_tokens", "cost_usd"):
            self._require_not_negative("LlmRequestFinished", f"usage.{name}", getattr(usage, name))
        self._llm_request_finished(request_id=request_id, usage=usage, stop_reason=stop_reason)

    @event("LlmRequestFinished")
    def _llm_request_finished(self, request_id: UUID, usage: TokenUsage, stop_reason: str) -> None:
        counters = self.state.usage
        counters.input_tokens += usage.input_tokens
        counters.output_tokens += usage.output_tokens
        counters.cached_tokens += usage.cached_tokens
        counters.cost_usd += usage.cost_usd
        self.state.llm_request = None

    def cancel_llm_request(self, request_id: UUID, reason: str = "") -> None:
        self._require_request(request_id)
        self._llm_request_cancelled(request_id=request_id, reason=reason)

    @event("LlmRequestCancelled")
    def _llm_request_cancelled(self, request_id: UUID, reason: str) -> None:
        self.state.usage.llm_cancelled += 1
        self.state.llm_request = None

    def _require_type(
        self, event: str, field: str, value: object, kind: type[Any], what: str
    ) -> None:
        """A command's argument that is converted or read before its event is checked."""
        if not isinstance(value, kind):
            raise InvalidEventPayload(
                self.id, event, field, f"must be {what}, got {type(value).__name__} {value!r:.60}"
            )

    def _require_not_negative(self, event: str, field: str, value: Any) -> None:
        try:
            negative = value < 0
        except (TypeError, ArithmeticError):  # not a number, or NaN: refused by check_payload
            return
        if negative:
            raise InvalidEventPayload(self.id, event, field, f"must be >= 0, got {value!r}")

    def _require_request(self, request_id: UUID) -> None:
        if self.state.llm_request != request_id:
            raise InvalidCommand(self.id, f"LLM request {request_id} is not in flight")

    # -- tools ----------------------------------------------------------------------

    def request_tool_call(self, call_id: str, tool: str, arguments: Mapping[str, Any]) -> None:
        pending = self.state.pending_tool_calls
        if call_id in pending:
            raise InvalidCommand(self.id, f"tool call {call_id!r} is already pending")
        if len(pending) >= type(self).max_pending:
            raise AgentLimitExceeded(self.id, "pending tool calls", type(self).max_pending)
        self._require_type("ToolCallRequested", "arguments", arguments, Mapping, "a mapping")
        self._tool_call_requested(call_id=call_id, tool=tool, arguments=dict(arguments))

    @event("ToolCallRequested")
    def _tool_call_requested(self, call_id: str, tool: str, arguments: dict[str, Any]) -> None:
        self.state.pending_tool_calls[call_id] = ToolCall(
            call_id=call_id, tool=tool, arguments=arguments, requested_version=self.version + 1
        )

    def complete_tool_call(
        self,
        call_id: str,
        output: str | None = None,
        error: str | None = None,
        duration_ms: int = 0,
    ) -> None:
        """Record a tool call's result: ``output`` on success or ``error``."""
        if call_id not in self.state.pending_tool_calls:
            raise InvalidCommand(self.id, f"tool call {call_id!r} is not pending")
        if (output is None) == (error is None):
            raise InvalidCommand(self.id, "give exactly one of output and error")
        self._require_not_negative("ToolCallCompleted", "duration_ms", duration_ms)
        self._tool_call_completed(
            call_id=call_id, output=output, error=error, duration_ms=duration_ms
        )

    @event("ToolCallCompleted")
    def _tool_call_completed(
        self, call_id: str, output: str | None, error: str | None, duration_ms: int
    ) -> None:
        call = self.state.pending_tool_calls.pop(call_id, None)
        self.state.usage.tool_calls += 1
        if error is not None:
            self.state.usage.tool_errors += 1
        text = output if output is not None else f"error: {error}"
        preview = type(self).tool_output_preview
        tool = call.tool if call else call_id
        self.state.window.add(self.version + 1, f"tool:{tool}", text[:preview])

    def request_approval(self, key: str, tool: str, arguments: Mapping[str, Any]) -> None:
        pending = self.state.pending_approvals
        if key in pending:
            raise InvalidCommand(self.id, f"approval {key!r} is already pending")
        if len(pending) >= type(self).max_pending:
            raise AgentLimitExceeded(self.id, "pending approvals", type(self).max_pending)
        self._require_type("ToolApprovalRequested", "arguments", arguments, Mapping, "a mapping")
        self._approval_requested(key=key, tool=tool, arguments=dict(arguments))

    @event("ToolApprovalRequested")
    def _approval_requested(self, key: str, tool: str, arguments: dict[str, Any]) -> None:
        self.state.pending_approvals[key] = Approval(
            key=key, tool=tool, arguments=arguments, requested_version=self.version + 1
        )

    def decide_approval(self, key: str, approved: bool, decided_by: str) -> None:
        if key not in self.state.pending_approvals:
            raise InvalidCommand(self.id, f"approval {key!r} is not pending")
        self._approval_decided(key=key, approved=approved, decided_by=decided_by)

    @event("ToolApprovalDecided")
    def _approval_decided(self, key: str, approved: bool, decided_by: str) -> None:
        self.state.pending_approvals.pop(key, None)
        self.state.usage.approvals_decided += 1

    # -- lifecycle ------------------------------------------------------------------

    def pause(self, reason: str = "") -> None:
        if not self.state.paused:
            self._paused(reason=reason)

    @event("Paused")
    def _paused(self, reason: str) -> None:
        self.state.paused = True
        self.state.pause_reason = reason

    def resume(self) -> None:
        if self.state.paused:
            self._resumed()

    @event("Resumed")
    def _resumed(self) -> None:
        self.state.paused = False
        self.state.pause_reason = ""

    def record_error(self, message: str, stack: str = "") -> None:
        self._error_recorded(message=message, stack=stack)

    @event("ErrorRecorded")
    def _error_recorded(self, message: str, stack: str) -> None:
        self.state.usage.errors += 1
        self.state.last_error = message

    # -- integrations ---------------------------------------------------------------

    def receive_webhook(
        self, source: str, payload: bytes, idempotency_key: str | None = None
    ) -> bool:
        """Record a webhook's raw body. A retry whose ``idempotency_key`` is among the
        last ``idempotency_window`` keys is dropped: returns False, records nothing."""
        if idempotency_key is not None and idempotency_key in self.state.idempotency_keys:
            return False
        self._webhook_received(source=source, payload=payload, idempotency_key=idempotency_key)
        return True

    @event("WebhookReceived")
    def _webhook_received(self, source: str, payload: bytes, idempotency_key: str | None) -> None:
        self.state.usage.webhooks += 1
        if idempotency_key is not None:
            keys = self.state.idempotency_keys
            keys.append(idempotency_key)
            excess = len(keys) - type(self).idempotency_window
            if excess > 0:
                del keys[:excess]
