//! kafkajs (Node) against a `kascade serve` process; the checks are in
//! `js/kafkajs_checks.js`. kafkajs reads only through consumer groups.

use compat_tests::{client_suite, Client};

client_suite!(|broker| Client::node(broker, "kafkajs_checks.js"));
