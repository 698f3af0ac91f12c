"""The engine's client properties for secured clusters, as faust (aiokafka) takes them.

The services read the same `--kafka-config FILE` and `STREAMALLOC_KAFKA_<PROPERTY>`
variables as the engine (client_properties.py turns them into librdkafka properties). faust
connects with aiokafka, which takes credentials as objects, not properties: here the
properties that have an aiokafka meaning become `faust.auth` credentials with an
`ssl.SSLContext`; every other property is refused in one line naming it, since a property
left out silently could weaken the connection (or leave a service unable to reach a cluster
the engine reaches). The password travels only inside the credentials object, whose repr
shows the username alone.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from faust.auth import Credentials, SASLCredentials, SSLCredentials

from streamalloc.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Properties with an aiokafka meaning (the rest of the engine's have none in the services).
MAPPED = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",  # librdkafka's alias
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
    }
)
_ADVICE = {
    "ssl.keystore.location": "give the client certificate and key as PEM files: ssl.certificate.location "
    "and ssl.key.location (openssl pkcs12 -in keystore.p12 -out client.pem)",
    "ssl.certificate.pem": "give it as a file: ssl.certificate.location",
    "ssl.key.pem": "give it as a file: ssl.key.location",
}


def broker_credentials(properties: Mapping[str, str]) -> Credentials | None:
    """faust's `broker_credentials` for the engine's client properties; None for plaintext.

    Raises ConfigError, in one line naming the properties (never their values), for what
    the services cannot honour.
    """
    unmapped = sorted(set(properties) - MAPPED)
    if unmapped:
        advice = "; ".join(f"{key}: {_ADVICE[key]}" for key in unmapped if key in _ADVICE)
        raise ConfigError(
            f"the services (faust-streaming on aiokafka) cannot use {', '.join(unmapped)}"
            + (f" ({advice})" if advice else "")
            + "; they take security.protocol, sasl.mechanism PLAIN or SCRAM-SHA-256/512, sasl.username, "
            "sasl.password, ssl.ca.location or ssl.ca.pem, ssl.certificate.location, ssl.key.location, "
            "ssl.key.password and ssl.endpoint.identification.algorithm"
        )
    protocol = properties.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"security.protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    sasl = protocol.startswith("SASL_")
    context = _ssl_context(properties) if protocol.endswith("SSL") else None
    if not sasl:
        given = sorted(k for k in properties if k.startswith("sasl."))
        if given:
            raise ConfigError(f"{', '.join(given)} given, but security.protocol={protocol} uses no SASL")
        return SSLCredentials(context) if context is not None else None
    mechanism = (properties.get("sasl.mechanism") or properties.get("sasl.mechanisms") or "PLAIN").upper()
    if mechanism not in MECHANISMS:
        raise ConfigError(
            f"sasl.mechanism={mechanism}: the services take {', '.join(MECHANISMS)} "
            "(GSSAPI and OAUTHBEARER are the engine's only)"
        )
    username, password = properties.get("sasl.username"), properties.get("sasl.password")
    if not username or password is None:
        raise ConfigError(f"security.protocol={protocol} needs sasl.username and sasl.password")
    return SASLCredentials(username=username, password=password, mechanism=mechanism, ssl_context=context)


def _ssl_context(properties: Mapping[str, str]) -> ssl.SSLContext:
    """A client context: the CA given (else the system's), the client certificate if any."""
    ca_file, ca_pem = properties.get("ssl.ca.location"), properties.get("ssl.ca.pem")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None, cadata=ca_pem)
        certificate, key = properties.get("ssl.certificate.location"), properties.get("ssl.key.location")
        if certificate or key:
            if not (certificate and key):
                raise ConfigError("a client certificate needs ssl.certificate.location and ssl.key.location")
            context.load_cert_chain(certificate, key, password=properties.get("ssl.key.password"))
    except (OSError, ssl.SSLError) as exc:
        # the message names files and OpenSSL's reason, never a password
        raise ConfigError(f"cannot build the services' TLS context: {exc}") from exc
    check = properties.get("ssl.endpoint.identification.algorithm", "https").lower()
    if check not in ("https", "none", ""):
        raise ConfigError(f"ssl.endpoint.identification.algorithm must be https or none, not {check!r}")
    context.check_hostname = check == "https"
    return context
