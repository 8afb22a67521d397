"""`InlineGrid`: a Flower Grid that runs a ClientApp in this process, node after node.

Flower's simulation engine (Ray) runs nodes in worker processes and returns replies as they
arrive. This grid is the lightest engine there is: it calls the ClientApp for each message in
turn, in this thread, and returns the replies in node order. Tests use it (no worker processes,
no arrival-order effects, so two runs can be compared bit for bit); ``dmmlkd flower --backend
inline`` runs a whole experiment with it. Node ``i`` has node id ``first_node_id + i`` and
``partition-id`` i, as in Flower's simulation; every node sees ``run_config``.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Message, RecordDict, UserConfig
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class InlineGrid(Grid):
    """Runs ``client_app`` for ``num_nodes`` nodes in the calling thread."""

    def __init__(self, client_app: ClientApp, num_nodes: int, first_node_id: int = 1,
                 run_config: UserConfig | None = None) -> None:
        # Flower stamps messages with the process's task identity; the simulation engine sets
        # it for its server thread, so does this grid for the calling one (run 0).
        TaskIdentity.task_id, TaskIdentity.run_id = 1, 0
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.client_app = client_app
        self.contexts = {
            first_node_id + i: Context(run_id=0, node_id=first_node_id + i,
                                       node_config={"partition-id": i, "num-partitions": num_nodes},
                                       state=RecordDict(), run_config=dict(run_config or {}))
            for i in range(num_nodes)}
        self.replies: dict[str, Message] = {}
        self._run: Run | None = None

    def set_run(self, run: Run) -> None:
        """Remember the run (unused: one run per grid)."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run set with `set_run`."""
        if self._run is None:
            raise RuntimeError("no run set")
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """A message to a node (Flower's deprecated helper; use Message(...) directly)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Every node's id."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run each message's node now; keep the reply for `pull_messages`."""
        ids = []
        for msg in messages:
            msg_id = str(uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            node = msg.metadata.dst_node_id
            if node not in self.contexts:
                raise ValueError(f"no node {node} on this grid")
            self.replies[msg_id] = self.client_app(msg, self.contexts[node])
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to these messages, in node order."""
        out = [self.replies.pop(i) for i in message_ids if i in self.replies]
        return sorted(out, key=lambda m: m.metadata.src_node_id)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push, run and pull: every reply, in node order."""
        return self.pull_messages(self.push_messages(messages))
