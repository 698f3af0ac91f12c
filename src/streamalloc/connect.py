"""Find a broker for a command: the configured one, or the embedded one started for the command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamalloc.broker import EmbeddedBroker
from streamalloc.config import Settings
from streamalloc.errors import ConfigError
from streamalloc.kafka.clients import resolve_profile


@contextmanager
def kafka_available(
    settings: Settings, say: Callable[[str], None] = print, *, wait_s: float = 10.0
) -> Iterator[Settings]:
    """Yield settings with bootstrap servers; start (and on exit stop) the embedded broker if none.

    A configured cluster is reached once first, so wrong credentials or an untrusted
    certificate stop the command in one line before it creates or writes anything; a
    cluster that does not answer stops it after `wait_s` (a worker waits longer: its
    broker may be restarting).
    """
    if settings.bootstrap:
        yield resolve_profile(settings, timeout_s=wait_s)
        return
    protocol = settings.kafka_properties.get("security.protocol", "plaintext")
    if protocol.lower() != "plaintext":
        raise ConfigError(
            f"security.protocol={protocol} is set but no bootstrap servers are: the embedded broker "
            "speaks PLAINTEXT only (give --bootstrap, STREAMALLOC_BOOTSTRAP or bootstrap.servers)"
        )
    with EmbeddedBroker() as bootstrap:
        say(f"No --bootstrap given: started the embedded broker at {bootstrap} (memory only, stops on exit).")
        yield settings.replace(bootstrap=bootstrap, broker_profile="embedded")
