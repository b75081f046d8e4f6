"""Kafka security settings reach the trainer's confluent-kafka clients as librdkafka keys."""

from ja4_core.settings import load_settings
from trainer.publish import kafka_config


def test_plaintext_default() -> None:
    assert kafka_config(load_settings({"KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9093"})) == {
        "bootstrap.servers": "a:9092,b:9093", "security.protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_and_certificates() -> None:
    conf = kafka_config(load_settings({
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "trainer", "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": "/etc/ca.pem", "KAFKA_SSL_CERTFILE": "/etc/c.pem", "KAFKA_SSL_KEYFILE": "/etc/k.pem"}))
    assert conf == {"bootstrap.servers": "localhost:9092", "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "trainer", "sasl.password": "s3cret",
                    "ssl.ca.location": "/etc/ca.pem", "ssl.certificate.location": "/etc/c.pem",
                    "ssl.key.location": "/etc/k.pem"}


def test_sasl_plaintext_plain() -> None:
    conf = kafka_config(load_settings({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                       "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}))
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["sasl.mechanism"] == "PLAIN" and conf["sasl.username"] == "u" and conf["sasl.password"] == "p"


def test_ssl_without_sasl() -> None:
    conf = kafka_config(load_settings({"KAFKA_SECURITY_PROTOCOL": "ssl", "KAFKA_SSL_CAFILE": "/ca"}))
    assert conf == {"bootstrap.servers": "localhost:9092", "security.protocol": "SSL", "ssl.ca.location": "/ca"}
    assert not any(k.startswith("sasl") for k in conf)
