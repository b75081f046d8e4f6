"""Settings (ja4_core.settings): contract defaults, env and flag precedence, validation."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from ja4_core.errors import ConfigError
from ja4_core.settings import Settings, add_setting_flags, load_settings

#: The contract's configuration table: variable -> (attribute, default).
CONTRACT = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka_bootstrap_servers", "localhost:9092"),
    "SCORER_APP_ID": ("scorer_app_id", "ja4-scorer"),
    "TOPIC_FEATURES": ("topic_features", "ja4.features"),
    "TOPIC_SCORES": ("topic_scores", "ja4.scores"),
    "TOPIC_DLQ": ("topic_dlq", "ja4.features.dlq"),
    "TOPIC_CONTROL": ("topic_control", "ja4.models.control"),
    "MODEL_STORE": ("model_store", "./var/models"),
    "CLICKHOUSE_URL": ("clickhouse_url", "chdb://./var/clickhouse"),
    "CONTROL_SIGNING_KEY": ("control_signing_key", None),
    "SCORER_WEB_PORT": ("scorer_web_port", 6066),
    "SCORER_BATCH_MAX": ("scorer_batch_max", 1000),
    "SCORER_BATCH_WAIT_MS": ("scorer_batch_wait_ms", 50),
    "MODEL_HISTORY_COUNT": ("model_history_count", 5),
    "MODEL_NAME": ("model_name", "default"),
    "FEATURES": ("features", None),  # None = the built-in list
    "AE_WEIGHT": ("ae_weight", None),  # None = decided by the trainer from evidence (issue 16)
    "XGB_WEIGHT": ("xgb_weight", None),
}

#: A valid non-default value per contract variable, as raw text and as parsed.
VALID = {
    "KAFKA_BOOTSTRAP_SERVERS": ("k1:9092, k2:19092", "k1:9092,k2:19092"),
    "SCORER_APP_ID": ("scorer-blue", "scorer-blue"),
    "TOPIC_FEATURES": ("feat.in", "feat.in"),
    "TOPIC_SCORES": ("scores.out", "scores.out"),
    "TOPIC_DLQ": ("feat.dlq", "feat.dlq"),
    "TOPIC_CONTROL": ("models_ctl", "models_ctl"),
    "MODEL_STORE": ("/srv/models", "/srv/models"),
    "CLICKHOUSE_URL": ("http://u:p@ch:8123/ja4", "http://u:p@ch:8123/ja4"),
    "CONTROL_SIGNING_KEY": ("s3cret", "s3cret"),
    "SCORER_WEB_PORT": ("7001", 7001),
    "SCORER_BATCH_MAX": ("250", 250),
    "SCORER_BATCH_WAIT_MS": ("5", 5),
    "MODEL_HISTORY_COUNT": ("2", 2),
    "MODEL_NAME": ("shop", "shop"),
    "FEATURES": (" hits, post_ratio ,header_count", ("hits", "post_ratio", "header_count")),
    "AE_WEIGHT": ("0.5", 0.5),
    "XGB_WEIGHT": ("0", 0.0),
}

#: Another valid value, for the flag in precedence tests.
OTHER = {
    "KAFKA_BOOTSTRAP_SERVERS": ("flag:1", "flag:1"),
    "SCORER_APP_ID": ("from-flag", "from-flag"),
    "TOPIC_FEATURES": ("flag.features", "flag.features"),
    "TOPIC_SCORES": ("flag.scores", "flag.scores"),
    "TOPIC_DLQ": ("flag.dlq", "flag.dlq"),
    "TOPIC_CONTROL": ("flag.control", "flag.control"),
    "MODEL_STORE": ("file:///flag/models", "file:///flag/models"),
    "CLICKHOUSE_URL": ("chdb:///flag/ch", "chdb:///flag/ch"),
    "CONTROL_SIGNING_KEY": ("flag-key", "flag-key"),
    "SCORER_WEB_PORT": ("7002", 7002),
    "SCORER_BATCH_MAX": ("99", 99),
    "SCORER_BATCH_WAIT_MS": ("1000", 1000),
    "MODEL_HISTORY_COUNT": ("9", 9),
    "MODEL_NAME": ("flagmodel", "flagmodel"),
    "FEATURES": ("hits", ("hits",)),
    "AE_WEIGHT": ("0.1", 0.1),
    "XGB_WEIGHT": ("0.9", 0.9),
}


def flag_of(env: str) -> str:
    return "--" + CONTRACT[env][0].replace("_", "-")


def parse_flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    return parser.parse_args(argv)


def test_defaults_match_the_contract_table():
    s = load_settings(environ={})
    for env, (attr, default) in CONTRACT.items():
        assert getattr(s, attr) == default, env
    assert s.signing_keys == ()


def test_every_contract_variable_is_declared_once_with_its_env_name():
    envs = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(envs) == len(set(envs))
    declared = {f.metadata["env"]: f.name for f in dataclasses.fields(Settings)}
    for env, (attr, _) in CONTRACT.items():
        assert declared.get(env) == attr


@pytest.mark.parametrize("env", list(CONTRACT))
def test_each_variable_is_read_from_the_environment(env):
    raw, parsed = VALID[env]
    s = load_settings(environ={env: raw})
    assert getattr(s, CONTRACT[env][0]) == parsed


def test_os_environ_is_the_default_source(monkeypatch):
    monkeypatch.setenv("SCORER_BATCH_MAX", "123")
    assert load_settings().scorer_batch_max == 123


@pytest.mark.parametrize("env", list(CONTRACT))
def test_each_variable_has_a_cli_flag_that_wins_over_the_environment(env):
    env_raw, env_parsed = VALID[env]
    flag_raw, flag_parsed = OTHER[env]
    assert env_parsed != flag_parsed
    args = parse_flags([flag_of(env), flag_raw])
    s = load_settings(environ={env: env_raw}, args=args)
    assert getattr(s, CONTRACT[env][0]) == flag_parsed
    # Without the flag, the environment value is used.
    assert getattr(load_settings(environ={env: env_raw}, args=parse_flags([])), CONTRACT[env][0]) == env_parsed


def test_flags_as_a_mapping_also_win():
    s = load_settings(environ={"MODEL_NAME": "env"}, args={"model_name": "flag"})
    assert s.model_name == "flag"


def test_settings_are_frozen():
    s = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.scorer_batch_max = 5  # type: ignore[misc]


BAD = [
    ("KAFKA_BOOTSTRAP_SERVERS", ""),
    ("KAFKA_BOOTSTRAP_SERVERS", ","),
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
    ("KAFKA_BOOTSTRAP_SERVERS", "host:0"),
    ("KAFKA_BOOTSTRAP_SERVERS", "host:70000"),
    ("KAFKA_BOOTSTRAP_SERVERS", "host:abc"),
    ("KAFKA_BOOTSTRAP_SERVERS", ":9092"),
    ("SCORER_APP_ID", ""),
    ("SCORER_APP_ID", "has space"),
    ("SCORER_APP_ID", "-leading"),
    ("SCORER_APP_ID", "a/b"),
    ("TOPIC_FEATURES", ""),
    ("TOPIC_FEATURES", "bad topic"),
    ("TOPIC_SCORES", "x" * 250),
    ("TOPIC_DLQ", "a/b"),
    ("TOPIC_CONTROL", "ctl!"),
    ("MODEL_STORE", ""),
    ("MODEL_STORE", "   "),
    ("MODEL_STORE", "s3://bucket/models"),
    ("MODEL_STORE", "http://host/models"),
    ("CLICKHOUSE_URL", ""),
    ("CLICKHOUSE_URL", "./var/clickhouse"),
    ("CLICKHOUSE_URL", "mysql://host/db"),
    ("SCORER_WEB_PORT", "0"),
    ("SCORER_WEB_PORT", "65536"),
    ("SCORER_WEB_PORT", "http"),
    ("SCORER_WEB_PORT", "80.5"),
    ("SCORER_BATCH_MAX", "0"),
    ("SCORER_BATCH_MAX", "-1"),
    ("SCORER_BATCH_MAX", "1e3"),
    ("SCORER_BATCH_MAX", ""),
    ("SCORER_BATCH_MAX", "100001"),
    ("SCORER_BATCH_WAIT_MS", "0"),
    ("SCORER_BATCH_WAIT_MS", "fast"),
    ("MODEL_HISTORY_COUNT", "0"),
    ("MODEL_HISTORY_COUNT", "five"),
    ("MODEL_NAME", ""),
    ("MODEL_NAME", ".."),
    ("MODEL_NAME", "../etc"),
    ("MODEL_NAME", "a/b"),
    ("FEATURES", ","),
    ("FEATURES", "hits,hits"),
    ("FEATURES", "hits,bad-name"),
    ("FEATURES", "1st"),
    ("FEATURES", "hits;drop table"),
    ("AE_WEIGHT", "1.5"),
    ("AE_WEIGHT", "-0.1"),
    ("AE_WEIGHT", "nan"),
    ("AE_WEIGHT", "heavy"),
    ("XGB_WEIGHT", "2"),
    ("XGB_WEIGHT", "inf"),
    ("SCORER_THREADS", "0"),
    ("TOPIC_PARTITIONS", "0"),
    ("LOG_LEVEL", "verbose"),
    ("LOG_FORMAT", "xml"),
    ("KAFKA_SECURITY_PROTOCOL", "tls"),
    ("KAFKA_SASL_MECHANISM", "gssapi"),
    ("BASELINE_FILTER", "1; DROP TABLE x"),
    ("BASELINE_FILTER", "1 -- comment"),
    ("EIF_SAMPLE_SIZE", "8"),
    ("EIF_SAMPLE_SIZE", "big"),
    ("EIF_CONTAMINATION", "0"),
    ("KAFKA_SESSION_TIMEOUT_S", "0.5"),
]


@pytest.mark.parametrize("env, raw", BAD, ids=[f"{e}={r[:12]!r}" for e, r in BAD])
def test_bad_value_names_the_variable(env, raw):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={env: raw})
    message = str(info.value)
    assert message.startswith(f"{env}: "), message
    assert "\n" not in message


@pytest.mark.parametrize("env, raw", [("SCORER_BATCH_MAX", "0"), ("AE_WEIGHT", "3"), ("MODEL_NAME", "../x")])
def test_bad_flag_value_also_names_the_variable(env, raw):
    attr = dict((e, a) for e, (a, _) in CONTRACT.items())[env]
    args = parse_flags(["--" + attr.replace("_", "-"), raw])
    with pytest.raises(ConfigError, match=f"^{env}: "):
        load_settings(environ={}, args=args)


def test_a_bad_environment_value_is_not_checked_when_a_flag_replaces_it():
    s = load_settings(environ={"SCORER_BATCH_MAX": "0"}, args=parse_flags(["--scorer-batch-max", "10"]))
    assert s.scorer_batch_max == 10


def test_both_weights_at_one_are_refused():
    with pytest.raises(ConfigError, match="^AE_WEIGHT"):
        load_settings(environ={"AE_WEIGHT": "1", "XGB_WEIGHT": "1"})
    assert load_settings(environ={"AE_WEIGHT": "1"}).ae_weight == 1.0


@pytest.mark.parametrize("raw, value", [("0", 0.0), ("1", 1.0), ("0.3", 0.3)])
def test_weight_bounds_are_inclusive(raw, value):
    assert load_settings(environ={"XGB_WEIGHT": raw}).xgb_weight == value


def test_empty_optional_setting_means_unset():
    s = load_settings(environ={"CONTROL_SIGNING_KEY": "", "FEATURES": ""})
    assert s.control_signing_key is None and s.features is None and s.signing_keys == ()


def test_signing_keys_current_first_then_previous():
    s = load_settings(environ={"CONTROL_SIGNING_KEY": "new", "CONTROL_SIGNING_KEY_PREVIOUS": "old"})
    assert s.signing_keys == ("new", "old")


def test_describe_masks_secrets_and_names_variables():
    s = load_settings(environ={"CONTROL_SIGNING_KEY": "topsecret", "KAFKA_SASL_PASSWORD": "pw",
                               "KAFKA_SASL_USERNAME": "alice"})
    described = s.describe()
    assert described["CONTROL_SIGNING_KEY"] == "***" and described["KAFKA_SASL_PASSWORD"] == "***"
    assert described["KAFKA_SASL_USERNAME"] == "alice"
    assert "topsecret" not in repr(described) and "pw" not in str(described.values())
    assert set(CONTRACT) <= set(described)


def test_help_documents_variable_and_default():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    text = parser.format_help()
    for env in CONTRACT:
        assert env in text and flag_of(env) in text


def test_fetch_wait_defaults_to_half_the_batch_wait_and_can_be_set(tmp_path, monkeypatch) -> None:
    """The broker may hold a fetch this long: short by default (latency on brokers that hold
    it), Kafka's 500 ms when an operator says so (no idle fetch load on Apache Kafka)."""
    from stream_scorer import faust_app_args as faust_tuning

    monkeypatch.chdir(tmp_path)  # prepare_process creates Faust's data directory
    monkeypatch.setitem(faust_tuning._patched, "ms", faust_tuning._patched.get("ms", 1))  # restored after
    default = load_settings({"SCORER_BATCH_WAIT_MS": "20"})
    faust_tuning.prepare_process(default, "t", batch_wait_ms=default.scorer_batch_wait_ms)
    assert faust_tuning._patched["ms"] == 10
    chosen = load_settings({"SCORER_BATCH_WAIT_MS": "20", "KAFKA_FETCH_MAX_WAIT_MS": "500"})
    faust_tuning.prepare_process(chosen, "t", batch_wait_ms=chosen.scorer_batch_wait_ms)
    assert faust_tuning._patched["ms"] == 500
    with pytest.raises(ConfigError, match="KAFKA_FETCH_MAX_WAIT_MS"):
        load_settings({"KAFKA_FETCH_MAX_WAIT_MS": "-1"})


# --- secrets never printed (issue 13, item 7) ------------------------------------------------

SECRET_ENV = {"CONTROL_SIGNING_KEY": "sign-key-Zq81", "CONTROL_SIGNING_KEY_PREVIOUS": "old-key-Yw42",
              "KAFKA_SASL_PASSWORD": "sasl-pw-Xv93", "CLICKHOUSE_URL": "http://ja4user:ch-pw-Wu74@ch.example:8123/ja4"}
SECRET_VALUES = ("sign-key-Zq81", "old-key-Yw42", "sasl-pw-Xv93", "ch-pw-Wu74")


def test_repr_and_str_mask_every_secret_and_the_url_password():
    s = load_settings(SECRET_ENV)
    for text in (repr(s), str(s), repr(s.describe()), f"{s!r}", repr([s])):
        for secret in SECRET_VALUES:
            assert secret not in text
    assert "http://ja4user:***@ch.example:8123/ja4" in repr(s)
    assert s.describe()["CLICKHOUSE_URL"] == "http://ja4user:***@ch.example:8123/ja4"
    assert s.clickhouse_url == SECRET_ENV["CLICKHOUSE_URL"]  # the value itself is untouched


def test_secret_values_lists_every_secret_including_a_percent_encoded_url_password():
    s = load_settings({**SECRET_ENV, "CLICKHOUSE_URL": "https://u:p%40ss-Vt65@ch:8443/db"})
    assert set(s.secret_values()) == {"sign-key-Zq81", "old-key-Yw42", "sasl-pw-Xv93", "p%40ss-Vt65", "p@ss-Vt65"}
    assert load_settings({}).secret_values() == ()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_and_tracebacks_mask_secrets(fmt, capsys):
    import logging

    from ja4_core.logs import configure_logging, redact

    s = load_settings(SECRET_ENV)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("info", fmt, s.secret_values())
    try:
        log = logging.getLogger("test.secrets")
        log.info("connecting with %s and key %s", s.clickhouse_url, s.control_signing_key)
        try:
            raise RuntimeError(f"boom sasl={s.kafka_sasl_password} url=https://other:pw-Ut56@h/x")
        except RuntimeError:
            log.exception("failed: %r", s)
        err = capsys.readouterr().err
        assert "connecting" in err and "boom" in err and "***" in err
        for secret in (*SECRET_VALUES, "pw-Ut56"):
            assert secret not in err
        assert redact(f"x {s.control_signing_key_previous} y") == "x *** y"
    finally:
        configure_logging("info", "text")  # forget the secrets
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
