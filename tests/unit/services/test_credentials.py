"""The engine's client properties mapped onto faust's broker credentials, or refused."""

from __future__ import annotations

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from streamalloc.errors import ConfigError
from streamalloc.services.credentials import broker_credentials

SECRET = "s3cret-Pa55"  # noqa: S105


def scram(**more: str) -> dict[str, str]:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice", "sasl.password": SECRET, **more}  # fmt: skip


def test_no_properties_is_plaintext() -> None:
    assert broker_credentials({}) is None
    assert broker_credentials({"security.protocol": "PLAINTEXT"}) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_maps_to_sasl_credentials_whose_repr_hides_the_password(mechanism: str) -> None:
    credentials = broker_credentials(scram(**{"sasl.mechanism": mechanism}))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.mechanism.value == mechanism
    assert (credentials.username, credentials.password) == ("alice", SECRET)
    assert SECRET not in repr(credentials)


def test_sasl_ssl_carries_a_tls_context_and_ssl_alone_an_ssl_credential() -> None:
    credentials = broker_credentials(scram(**{"security.protocol": "SASL_SSL"}))
    assert isinstance(credentials, SASLCredentials) and credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context is not None and credentials.ssl_context.check_hostname
    tls = broker_credentials({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"})
    assert isinstance(tls, SSLCredentials) and tls.protocol.value == "SSL"
    assert not tls.context.check_hostname


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (scram(**{"linger.ms": "5", "ssl.keystore.location": "k.p12"}),
         "the services (faust-streaming on aiokafka) cannot use linger.ms, ssl.keystore.location "
         "(ssl.keystore.location: give the client certificate"),
        (scram(**{"sasl.mechanism": "GSSAPI"}), "sasl.mechanism=GSSAPI: the services take PLAIN"),
        ({"security.protocol": "PLAINTEXT", "sasl.username": "alice"}, "sasl.username given, but"),
        ({"security.protocol": "SASL_PLAINTEXT"}, "security.protocol=SASL_PLAINTEXT needs sasl.username"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/no/ca.pem"}, "cannot build the services' TLS"),
        ({"security.protocol": "SSL", "ssl.certificate.location": "c.pem"}, "a client certificate needs"),
    ],
)  # fmt: skip
def test_what_cannot_be_mapped_is_refused_in_one_line_without_values(
    properties: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        broker_credentials(properties)
    text = str(refused.value)
    assert text.startswith(message), text
    assert "\n" not in text and SECRET not in text
