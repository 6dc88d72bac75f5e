//! kafka-python (pure Python) against a `kascade serve` process; the checks are in
//! `python/kafka_python_checks.py`.

use compat_tests::{client_suite, Client};

client_suite!(|broker| Client::python(broker, "kafka_python_checks.py"));
