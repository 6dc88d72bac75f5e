//! confluent-kafka (Python, on librdkafka) against a `kascade serve` process;
//! the checks are in `python/confluent_kafka_checks.py`.

use compat_tests::{client_suite, Client};

client_suite!(|broker| Client::python(broker, "confluent_kafka_checks.py"));
