"""The shared core both processes stand on: settings, errors, the bundle format and model store,
the detectors and the ensemble, control messages and their log, the Kafka admin and security
helpers, and the ClickHouse schema and I/O. It imports neither ``stream_scorer`` nor ``trainer``."""
