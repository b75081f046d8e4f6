"""Kafka security settings mapped once for each client library we use.

The same ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*`` / ``KAFKA_SSL_*`` settings reach the
Faust transport (``broker_credentials``), plain aiokafka clients (the control follower,
``status``) and confluent-kafka (the trainer's publisher, ``produce``).
"""

from __future__ import annotations

import ssl
from typing import Any

from ja4_core.settings import Settings


def _ssl_context(s: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=s.kafka_ssl_cafile)
    if s.kafka_ssl_certfile:
        ctx.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile)
    return ctx


def aiokafka_security(s: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients."""
    proto = s.kafka_security_protocol.upper()
    if proto == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        out["ssl_context"] = _ssl_context(s)
    if proto.startswith("SASL"):
        out.update(sasl_mechanism=s.kafka_sasl_mechanism.upper(),
                   sasl_plain_username=s.kafka_sasl_username, sasl_plain_password=s.kafka_sasl_password)
    return out


def faust_credentials(s: Settings) -> Any:
    """``broker_credentials`` for the Faust app, or None for plaintext."""
    import faust

    proto = s.kafka_security_protocol
    if proto == "plaintext":
        return None
    if proto == "ssl":
        return faust.SSLCredentials(_ssl_context(s))
    return faust.SASLCredentials(
        username=s.kafka_sasl_username, password=s.kafka_sasl_password,
        ssl_context=_ssl_context(s) if proto == "sasl_ssl" else None,
        mechanism=s.kafka_sasl_mechanism.upper())


def confluent_config(s: Settings) -> dict[str, Any]:
    """librdkafka configuration for confluent-kafka clients."""
    conf: dict[str, Any] = {"bootstrap.servers": s.kafka_bootstrap_servers,
                            "security.protocol": s.kafka_security_protocol.upper()}
    if s.kafka_security_protocol.startswith("sasl"):
        conf["sasl.mechanism"] = s.kafka_sasl_mechanism.upper()
        if s.kafka_sasl_username is not None:
            conf["sasl.username"] = s.kafka_sasl_username
        if s.kafka_sasl_password is not None:
            conf["sasl.password"] = s.kafka_sasl_password
    for key, value in (("ssl.ca.location", s.kafka_ssl_cafile), ("ssl.certificate.location", s.kafka_ssl_certfile),
                       ("ssl.key.location", s.kafka_ssl_keyfile)):
        if value:
            conf[key] = value
    return conf
