"""Development services beside the product: brokers for the tests, the benchmarks and the demo.

Nothing here is imported by a scorer, sink or trainer in production. :mod:`ja4_dev.apache_kafka`
runs real Apache Kafka (KRaft) nodes on loopback from jars resolved from Maven Central.
"""
