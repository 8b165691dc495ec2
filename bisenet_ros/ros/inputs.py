"""Input subscriptions whose reliability follows the publishers' (``input_reliability: auto``).

A best-effort publisher never reaches a reliable subscription, and a best-effort subscription to
a reliable camera driver gives up what reliability buys for large images: fragments lost in
transport are not repaired, so whole frames go missing. ``auto`` therefore subscribes reliable
when every publisher on the topic is reliable and best effort otherwise (also while there is no
publisher yet: best effort reaches both), the way rosbag2 adapts its QoS to the publishers. The
verdict is taken again by :meth:`AdaptiveSubscription.refresh` only after the middleware said that
the publishers changed (a "matched" or "incompatible QoS" event marks it :attr:`~AdaptiveSubscription.dirty`
and calls ``on_change``): an idle camera costs no graph query, however many cameras a node has.
A middleware without matched events gets a refresh every time (polling). When the verdict
changes, the subscription is re-created. History stays keep-last with the
configured depth (1 by default): the node keeps only the newest frame, latency never grows.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}


def follow_publishers(offered: Sequence[ReliabilityPolicy]) -> ReliabilityPolicy:
    """``auto``: reliable when there are publishers and all offer reliable, else best effort."""
    if offered and all(r == ReliabilityPolicy.RELIABLE for r in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def reliability_name(policy: ReliabilityPolicy) -> str:
    return "reliable" if policy == ReliabilityPolicy.RELIABLE else "best_effort"


class AdaptiveSubscription:
    """One input subscription with a fixed or publisher-following reliability."""

    def __init__(self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], mode: str,
                 depth: int, on_lost: Callable[[int], None] | None = None,
                 on_change: Callable[[], None] | None = None, raw: bool = False) -> None:
        self.node, self.msg_type, self.callback, self.mode, self.depth = node, msg_type, callback, mode, depth
        self.raw = raw  # the callback gets the serialized message (bytes)
        self._on_lost = on_lost
        self._on_change = on_change  # told when the publishers changed (a refresh is due)
        self.dirty = True  # the publishers may have changed since the last refresh
        self.events = True  # the middleware reports matching; False: refresh polls every time
        self.topic = node.resolve_topic_name(topic)
        self.reliability = RELIABILITY.get(mode, ReliabilityPolicy.BEST_EFFORT)
        self.publishers_changed = False  # since the previous refresh (a camera driver came or went)
        self._gids: frozenset[bytes] = frozenset()
        self.matched = 0  # publishers matched now, as the middleware's last "matched" event said
        self.joined_at = -float("inf")  # time.monotonic() when a publisher last matched (came)
        self.subscription = self._create()

    def _create(self):
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=self.reliability,
                         durability=DurabilityPolicy.VOLATILE)
        on_lost = self._on_lost
        self.matched = 0  # a new subscription: nothing matched until its event says so
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible,  # no other default
                                            matched=self._on_matched,  # handler: each
                                            use_default_callbacks=False)  # costs every executor wake-up
        if on_lost is not None:
            events.message_lost = lambda info: on_lost(info.total_count_change)
        try:
            return self.node.create_subscription(self.msg_type, self.topic, self.callback, qos,
                                                 event_callbacks=events, raw=self.raw)
        except UnsupportedEventTypeError:  # a middleware without "message lost"/"matched" events: poll
            events.message_lost = events.matched = None
            self.events = False
            return self.node.create_subscription(self.msg_type, self.topic, self.callback, qos,
                                                 event_callbacks=events, raw=self.raw)

    def _on_matched(self, status: Any) -> None:
        self.matched = status.current_count
        if status.current_count_change > 0:
            self.joined_at = time.monotonic()
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        self.dirty = True
        if self._on_change is not None:
            self._on_change()

    def _on_incompatible(self, _event: Any) -> None:
        if self.mode == "auto":
            self._mark_dirty()  # the next refresh follows the new publisher
            return
        self.node.get_logger().warn(
            f"a publisher on {self.topic} offers QoS incompatible with input_reliability "
            f"{self.mode} (a best-effort publisher never reaches a reliable subscription): no "
            f"messages from it; set input_reliability to auto or best_effort",
            throttle_duration_sec=5.0)

    def sequence_number(self, info: dict) -> int | None:
        """The publisher's number of the message ``info`` describes, when it can be trusted: the
        middleware reports one and exactly one publisher is matched (several interleave their
        numbers; rclpy's message info does not say whose a number is). Without matched events: the
        graph's publishers at the last refresh, none pending."""
        single = self.matched == 1 if self.events else not self.dirty and len(self._gids) == 1
        if not single:
            return None
        return info.get("publication_sequence_number") or None  # None or 0: not reported

    def publisher_reliabilities(self) -> list[ReliabilityPolicy]:
        """The reliability each publisher on the topic offers (from the ROS graph)."""
        return [info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(self.topic)]

    def refresh(self) -> bool:
        """Look at the publishers again if they may have changed (sets :attr:`publishers_changed`);
        in ``auto`` mode follow their reliability. True if the subscription was re-created."""
        if not self.dirty and self.events:
            self.publishers_changed = False
            return False
        self.dirty = False  # before the query: an event during it marks it again
        infos = self.node.get_publishers_info_by_topic(self.topic)
        gids = frozenset(bytes(info.endpoint_gid) for info in infos)
        if not self.events and gids - self._gids:  # polled: a publisher came since the last look
            self.joined_at = time.monotonic()
        self.publishers_changed, self._gids = gids != self._gids, gids
        if self.mode != "auto":
            return False
        wanted = follow_publishers([info.qos_profile.reliability for info in infos])
        if wanted == self.reliability:
            return False
        self.node.destroy_subscription(self.subscription)
        self.reliability = wanted
        self.subscription = self._create()
        return True
