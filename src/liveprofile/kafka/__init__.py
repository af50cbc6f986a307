"""Apache Kafka as the event log: a local broker, a keyed producer and consumer-group workers."""
