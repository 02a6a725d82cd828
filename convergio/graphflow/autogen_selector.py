"""The AutoGen adapter of the speaker selector: a ``selector_func`` for ``SelectorGroupChat``.

Kept apart from :mod:`convergio.graphflow.selector` so that workflow code can import the
pure scoring without importing AutoGen::

    team = SelectorGroupChat(
        participants,
        model_client=client,  # unused: the selector function always returns a name
        selector_func=make_selector_func(definitions, topic=task, phase="analysis"),
        max_turns=4,
    )
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage

from convergio.agents.definition import AgentDefinition, MissionPhase
from convergio.graphflow.selector import ConversationState, SelectionWeights, select_speaker

SelectorFunc = Callable[[Sequence[BaseAgentEvent | BaseChatMessage]], str | None]


def conversation_state(
    definitions: Sequence[AgentDefinition],
    messages: Sequence[BaseAgentEvent | BaseChatMessage],
    *,
    topic: str,
    phase: MissionPhase | None = None,
    complexity: int = 3,
    urgency: float = 0.0,
) -> ConversationState:
    """The selector's view of a group chat thread.

    ``speakers`` are the sources of the chat messages (one per agent turn; inner events
    such as tool calls are not turns) whose source is a participant, so the task's "user"
    message and strangers are ignored. ``last_message`` is the text of the last chat message
    of the thread, whoever sent it (at the start, the task).
    """
    names = {d.name for d in definitions}
    chat = [m for m in messages if isinstance(m, BaseChatMessage)]
    speakers = [m.source for m in chat if m.source in names]
    last_message = chat[-1].to_text() if chat else ""
    return ConversationState(
        topic=topic,
        phase=phase,
        complexity=complexity,
        urgency=urgency,
        speakers=speakers,
        last_message=last_message,
    )


def make_selector_func(
    definitions: Sequence[AgentDefinition],
    *,
    topic: str,
    phase: MissionPhase | None = None,
    complexity: int = 3,
    urgency: float = 0.0,
    weights: SelectionWeights = SelectionWeights(),
    allow_repeat_speaker: bool = False,
) -> SelectorFunc:
    """A ``selector_func`` for ``SelectorGroupChat`` that returns the name of the participant
    :func:`~convergio.graphflow.selector.select_speaker` picks for the current thread.

    ``definitions`` must describe the team's participants (same names). The returned
    function is synchronous and deterministic; it never returns None, so the group chat's
    model-based selection is never used.
    """
    definitions = list(definitions)
    if not definitions:
        raise ValueError("make_selector_func needs at least one agent definition")
    # Validate the fixed inputs now rather than on the first turn.
    ConversationState(topic=topic, phase=phase, complexity=complexity, urgency=urgency)

    def selector_func(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> str | None:
        state = conversation_state(
            definitions, messages, topic=topic, phase=phase, complexity=complexity, urgency=urgency
        )
        return select_speaker(definitions, state, weights, allow_repeat_speaker=allow_repeat_speaker).agent

    return selector_func
