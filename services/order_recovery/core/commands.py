"""The command relay: sends the command outbox (action commands stored with their case steps,
migration 0011) to the command topic, and has them marked once the broker acknowledged them.

One call per lifecycle tick (`CommandRelay.run`). Each pass is the store's: one at a time across
every process, oldest first, nothing marked unless the publish returned. So a command reaches the
topic at least once (a crash between the broker's acknowledgement and the mark sends it again, with
the same action key), and an executor that applies each action key once applies each action once.
Messages are keyed by order id: one order's commands stay in order on one partition.
"""

from __future__ import annotations

import logging

from order_recovery.config import Settings
from order_recovery.core.headers import ACTION_KEY
from order_recovery.core.ports import CaseStore, Publisher, Retry
from order_recovery.core.records import OutgoingMessage
from order_recovery.domain.commands import ActionCommand, command_json

log = logging.getLogger(__name__)

#: Commands per pass (one transaction, one publish), and passes per tick: a backlog drains at
#: up to 5,000 commands a tick without holding the resolution consumer back for long.
PASS_SIZE = 500
PASSES_PER_RUN = 10


def command_message(topic: str, command: ActionCommand) -> OutgoingMessage:
    """The command as its message: keyed by order id, the action key in a header as well."""
    return OutgoingMessage(
        topic,
        command.order_id.encode(),
        command_json(command),
        [(ACTION_KEY, command.action_key.encode())],
    )


class CommandRelay:
    def __init__(
        self,
        settings: Settings,
        store: CaseStore,
        publisher: Publisher,
        retry: Retry,
        pass_size: int = PASS_SIZE,
    ) -> None:
        self._topic = settings.command_topic
        self._store, self._publisher, self._retry = store, publisher, retry
        self._pass_size = pass_size

    def run(self, passes: int = PASSES_PER_RUN) -> int:
        """Relay until the outbox is empty (or another process is relaying it), at most `passes`
        passes; how many commands went out."""
        sent = 0
        for _ in range(passes):
            n = self._retry.call(
                lambda: self._store.relay_commands(self._pass_size, self._publish),
                "relay action commands",
            )
            sent += n
            if n < self._pass_size:
                break
        if sent:
            log.info("command relay: sent %d action command(s)", sent)
        return sent

    def _publish(self, commands: list[ActionCommand]) -> None:
        self._publisher.publish([command_message(self._topic, c) for c in commands])
