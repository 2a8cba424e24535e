//! The deterministic simulation harness of `tests/simulation.rs`: a seeded random generator, a
//! state machine that records its history, a simulated disk and a simulated network.

pub mod disk;
pub mod machine;
pub mod network;
pub mod rng;
