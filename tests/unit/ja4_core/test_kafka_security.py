"""Kafka security settings reach every client library the same way."""

from __future__ import annotations

import ssl

import pytest

from ja4_core.kafka_security import aiokafka_security, confluent_config, faust_credentials
from ja4_core.settings import load_settings


def test_plaintext_adds_nothing() -> None:
    s = load_settings({})
    assert aiokafka_security(s) == {}
    assert faust_credentials(s) is None
    assert confluent_config(s) == {"bootstrap.servers": "localhost:9092", "security.protocol": "PLAINTEXT"}


def test_sasl_plaintext_maps_to_all_clients() -> None:
    s = load_settings({"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": "scram-sha-512",
                       "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw"})
    a = aiokafka_security(s)
    assert a == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                 "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    c = confluent_config(s)
    assert c["security.protocol"] == "SASL_PLAINTEXT" and c["sasl.mechanism"] == "SCRAM-SHA-512"
    assert c["sasl.username"] == "svc" and c["sasl.password"] == "pw"
    creds = faust_credentials(s)
    assert creds.username == "svc" and creds.password == "pw"
    assert str(creds.mechanism.value if hasattr(creds.mechanism, "value") else creds.mechanism).upper() == "SCRAM-SHA-512"


def test_ssl_builds_a_context() -> None:
    s = load_settings({"KAFKA_SECURITY_PROTOCOL": "ssl"})
    assert isinstance(aiokafka_security(s)["ssl_context"], ssl.SSLContext)
    assert confluent_config(s)["security.protocol"] == "SSL"


def test_unknown_protocol_is_a_config_error() -> None:
    from ja4_core.errors import ConfigError

    with pytest.raises(ConfigError, match="^KAFKA_SECURITY_PROTOCOL"):
        load_settings({"KAFKA_SECURITY_PROTOCOL": "kerberos"})
