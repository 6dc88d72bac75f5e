//! aiokafka (asyncio Python) against a `kascade serve` process; the checks are in
//! `python/aiokafka_checks.py`.

use compat_tests::{client_suite, Client};

client_suite!(|broker| Client::python(broker, "aiokafka_checks.py"));
