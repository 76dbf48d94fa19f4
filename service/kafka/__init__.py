"""The Kafka edge: the only package besides `state` that imports confluent_kafka."""
