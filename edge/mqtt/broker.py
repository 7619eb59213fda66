"""An MQTT broker inside the gateway's process (amqtt), for machines without Mosquitto.

Production sites run Mosquitto, and the gateway is a client of it. The README's
demo, and a box on which Mosquitto cannot be installed, need a broker all the
same: this one speaks MQTT 3.1.1 on one TCP listener, in the event loop it is
started from, keeps everything in memory (nothing is written to disk) and lets
every client in.

amqtt's own anonymous plugin marks each client it lets in as anonymous, and
amqtt then drops an anonymous client's persistent session (its subscriptions
and the QoS 1/2 messages queued while it was away) a second after it
disconnects (https://github.com/Yakifo/amqtt/issues/27, PR #248). The gateway's
link depends on that session, so the plugin here admits every client without
that mark.

amqtt 0.12 also sends a client, as it connects, the retained messages that
match any client's subscriptions, its own or not; `SubscribedRetainedBroker`
keeps those to the client's own subscriptions, which is what MQTT 3.1.1 asks
(3.3.1.3) and what Mosquitto does.

TCP_NODELAY: asyncio turns Nagle off on every TCP transport it creates, the
broker's accepted connections included, so nothing is set here; clients have to
do the same on their side (paho leaves Nagle on).
"""

from __future__ import annotations

import logging
import os

from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger("edge.broker")

# amqtt logs every connection, subscription and state change at INFO and
# DEBUG; the gateway logs a fault once, so only their warnings get through.
NOISY_LOGGERS = ("amqtt", "transitions")


class AdmitEveryClient(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Accept every CONNECT, without marking the session anonymous (see above)."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


class SubscribedRetainedBroker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt's Broker, less the retained messages of other clients' subscriptions (see above)."""

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # Called for a new subscription (already recorded) and, on every
        # connect, for every topic filter that any client holds.
        topic_filter, _ = subscription
        holders = self.subscriptions.get(topic_filter, ())
        if any(held.client_id == session.client_id for held, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class _NoStartupTraceback(logging.Filter):
    """amqtt logs a traceback for a failed start and then raises; the raise is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


class EmbeddedBroker:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def start(self) -> None:
        if self._broker is not None:
            return
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only the admission plugin: no $SYS publisher, no packet logger,
            # no session database.
            "plugins": {f"{__name__}.{AdmitEveryClient.__name__}": {}},
        }
        broker = SubscribedRetainedBroker(config)
        amqtt_log = logging.getLogger("amqtt.broker")
        quiet = _NoStartupTraceback()
        amqtt_log.addFilter(quiet)
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno is not None:
                error = OSError(f"cannot listen on {self.url}: {os.strerror(cause.errno)}")
                error.errno = cause.errno
                raise error from None
            raise
        finally:
            amqtt_log.removeFilter(quiet)
        self._broker = broker
        log.info("broker: listening on %s", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        await broker.shutdown()
        log.info("broker: stopped")

    def view(self) -> dict[str, object]:
        broker = self._broker
        clients = 0
        if broker is not None:
            clients = sum(
                1
                for session, _ in broker.sessions.values()
                if session.transitions.state == "connected"
            )
        return {"url": self.url, "running": broker is not None, "clients": clients}
