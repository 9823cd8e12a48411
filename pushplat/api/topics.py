"""The api's topic calls: Push.Subscribe / Unsubscribe (by device or by user) and
GetSubscriptions, as FCM's server-side topic management.

A change is written to the store first (one script per device, pipelined), then told to the
device's edge by one control record per device in the high lane (see edge/topics.py for why a
record and not a store read): the router routes it like a message, so a connected device's
index changes promptly and in order with its other deliveries. A repeated call is harmless and
repairs a control record that was lost (every record carries the device's new version).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from pushplat_client.v1 import message_pb2, push_pb2

from pushplat.config import Config
from pushplat.inbox import Inbox
from pushplat.limits import LimitExceeded, check_id
from pushplat.logs import kv
from pushplat.messages import now_ms
from pushplat.metrics import LIMITS_HIT
from pushplat.queue import LaneProducer
from pushplat.topics import Change, Changed, Subscriptions, SubscriptionsUnavailable
from pushplat.topics.names import MAX_DEVICES_PER_REQUEST, check_topic, check_topic_count
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.api")
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
CONTROL_LANE = "high"  # subscription changes should not wait behind a low backlog


class TopicCallError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TopicCalls:
    def __init__(
        self, config: Config, producer: LaneProducer | None, inbox: Inbox | None, store: Subscriptions
    ) -> None:
        self.config = config
        self.producer = producer
        self.inbox = inbox
        self.store = store

    @staticmethod
    def validate(request: push_pb2.SubscribeRequest) -> list[str]:
        """The request's topics, deduplicated, or LimitExceeded saying what to fix."""
        check_topic_count(request.topics, "the request")
        for index, topic in enumerate(request.topics):
            check_topic(topic, f"topics[{index}]")
        devices, users = len(request.device_ids), len(request.user_ids)
        if not devices and not users:
            raise LimitExceeded("topic_devices", "give device_ids or user_ids: whose subscriptions to change")
        if devices + users > MAX_DEVICES_PER_REQUEST:
            raise _too_many(devices + users)
        for index, device_id in enumerate(request.device_ids):
            check_id(f"device_ids[{index}]", device_id)
        for index, user_id in enumerate(request.user_ids):
            check_id(f"user_ids[{index}]", user_id)
        return list(dict.fromkeys(request.topics))

    async def change(
        self, request: push_pb2.SubscribeRequest, subscribe: bool, topics: list[str] | None = None
    ) -> push_pb2.SubscribeResponse:
        """Apply the change; `topics` is what validate() returned, when the caller ran it first."""
        if topics is None:
            topics = self.validate(request)
        targets = await self._targets(request)
        response = push_pb2.SubscribeResponse(
            users_without_devices=[u for u in dict.fromkeys(request.user_ids) if not any(t[1] == u for t in targets)]
        )
        if not targets:
            return response
        changes = [Change(device, topics, ()) if subscribe else Change(device, (), topics) for device, _ in targets]
        try:
            results = await self.store.change_many(
                changes, self.config.max_topics_per_device, self.config.device_memory_seconds
            )
        except SubscriptionsUnavailable as exc:
            raise TopicCallError(grpc.StatusCode.UNAVAILABLE, f"subscription store unavailable: {exc}") from None
        full_total = 0
        for (device, user), changed in zip(targets, results, strict=True):
            result = response.results.add(
                device_id=device,
                user_id=user,
                applied=changed.subscribed if subscribe else changed.unsubscribed,
                topic_count=changed.count,
            )
            if changed.full:
                full_total += len(changed.full)
                message = (
                    f"device {device!r} holds {changed.count} topics, the limit (--max-topics-per-device is "
                    f"{self.config.max_topics_per_device}); unsubscribe it from some first"
                )
                for topic in changed.full:
                    result.refused.add(topic=topic, code=EXHAUSTED, message=message)
        if full_total:
            LIMITS_HIT.labels("topics_per_device").inc(full_total)
        await self._tell_edges([device for device, _ in targets], results)
        return response

    async def get(self, request: push_pb2.GetSubscriptionsRequest) -> push_pb2.GetSubscriptionsResponse:
        check_id("device_id", request.device_id)
        try:
            snapshot = await self.store.get(request.device_id)
        except SubscriptionsUnavailable as exc:
            raise TopicCallError(grpc.StatusCode.UNAVAILABLE, f"subscription store unavailable: {exc}") from None
        return push_pb2.GetSubscriptionsResponse(device_id=request.device_id, topics=snapshot.topics)

    async def _targets(self, request: push_pb2.SubscribeRequest) -> list[tuple[str, str]]:
        """(device, user it came through or "") for every device the request names, once each."""
        targets: dict[str, str] = {d: "" for d in request.device_ids}
        users = list(dict.fromkeys(request.user_ids))
        if users:
            if self.inbox is None:
                raise TopicCallError(grpc.StatusCode.UNAVAILABLE, "this api has no device store to expand users")
            try:
                known = await self.inbox.devices_of(users)
            except Exception as exc:
                raise TopicCallError(grpc.StatusCode.UNAVAILABLE, f"cannot read the users' devices: {exc}") from None
            for user in users:
                for device in known.get(user, ()):
                    targets.setdefault(device, user)
            if len(targets) > MAX_DEVICES_PER_REQUEST:
                raise _too_many(len(targets), " (after expanding user_ids to their devices)")
        return list(targets.items())

    async def _tell_edges(self, devices: Sequence[str], results: Sequence[Changed]) -> None:
        if self.producer is None:
            return
        created = now_ms()
        envelopes = [
            delivery_pb2.Envelope(
                device_id=device,
                message=message_pb2.Message(priority=message_pb2.PRIORITY_HIGH, created_at_ms=created),
                topic_change=delivery_pb2.TopicChange(
                    subscribed=changed.subscribed, unsubscribed=changed.unsubscribed, version=changed.version
                ),
            )
            for device, changed in zip(devices, results, strict=True)
        ]
        # One publish for all of them (one hop to the producer), in order.
        outcomes = await self.producer.publish_many(CONTROL_LANE, envelopes)
        failed = [o for o in outcomes if o is not None]
        if failed:
            log.warning(kv("topics.control_unpublished", devices=len(failed), error=str(failed[0])))
            reason = str(failed[0])
            raise TopicCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"the change is stored (devices get it when they reconnect), but the edges of {len(failed)} of "
                f"{len(envelopes)} devices could not be told now: {reason}; repeat the call (it is "
                "idempotent)",
            )


def check_topic_send(request: push_pb2.SendRequest) -> None:
    """A Send to a topic: a valid name, and at-most-once (there is no per-subscriber inbox)."""
    check_topic(request.topic, "topic")
    if request.delivery == message_pb2.AT_LEAST_ONCE:
        raise LimitExceeded(
            "topic_delivery",
            "topic messages are at-most-once (they reach the subscribers connected when the message reaches "
            "their edge); send AT_MOST_ONCE, or send to each user or device for at-least-once",
        )


def _too_many(count: int, after: str = "") -> LimitExceeded:
    return LimitExceeded(
        "topic_devices",
        f"the request names {count} devices{after}; the limit is {MAX_DEVICES_PER_REQUEST} per call "
        "(split it into several)",
    )
