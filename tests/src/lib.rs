//! Cross-process integration tests of Tributary, and the process harness they use.
//!
//! The library is the harness ([`harness`]): it starts real coordinator (and, from issue 4,
//! broker) processes from already-built binaries, on free loopback ports, each with its own data
//! directory and log file, and can kill -9, pause, resume, restart and stop any of them. Every
//! cross-process test uses it, and so does `cargo xtask cluster-up` (which starts the same
//! processes detached, under `.tributary/`).
//!
//! [`kafka_clients`] finds and runs the third-party Kafka clients (kcat, confluent-kafka,
//! kafka-python) that `cargo xtask kafka-clients` installs, for the Kafka-protocol tests;
//! [`kafka_wire`] is a minimal hand-framed Kafka client for raw-socket tests.
//!
//! The tests under `tests/` talk to those processes over real gRPC on loopback. The storage
//! engine's own crash tests (which kill a real writing process) live in `tributary-storage`.

pub mod harness;
pub mod kafka_clients;
pub mod kafka_wire;
