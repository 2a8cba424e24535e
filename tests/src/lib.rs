//! Cross-process integration tests of Tributary.
//!
//! Tests here start real coordinator and broker processes and talk to them over real gRPC on
//! loopback. The process harness arrives with the coordinator (issue 3); until then the storage
//! engine's crash tests (which kill a real writing process) live in `tributary-storage`.
