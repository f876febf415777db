//! kcap — a simulator of the assembly calculus (NEMO): brain areas whose k
//! most-excited neurons fire each step, with Hebbian plasticity.
//!
//! Key design decision: **every random draw is a pure function of
//! (seed, what is drawn, counter)** ([`rng`]), never of a shared generator's
//! state, so a run is identical on any thread count and can be reproduced
//! bit for bit by other backends. The semantics are those of the project's
//! SPEC; the lazy engine ([`engine::lazy`]) simulates never-fired neurons
//! statistically so an area can have up to 10¹² neurons.
//!
//! ```
//! use kcap::{Brain, Projection};
//! let mut b = Brain::new(0.01, 7).unwrap();
//! b.add_stimulus("s", 100).unwrap();
//! b.add_area("A", 10_000, 100, 0.05).unwrap();
//! b.project(&Projection::new().fire("s", ["A"])).unwrap();
//! for _ in 0..10 {
//!     b.project(&Projection::new().fire("s", ["A"]).fire("A", ["A"])).unwrap();
//! }
//! assert_eq!(b.winners("A").unwrap().len(), 100);
//! ```

pub mod accuracy;
pub mod backend;
pub mod brain;
pub mod cap;
pub mod checkpoint;
pub mod engine;
pub mod error;
pub mod format;
pub mod memory;
pub mod model;
pub mod ops;
pub mod rng;
pub mod stats;

pub use brain::{AreaState, AreaStep, Brain, BrainOptions, FiberMemory, FormatChoice, Projection};
pub use error::{KcapError, Result};
pub use format::FiberFormat;
pub use model::{EngineKind, Source};
pub use stats::TailSampler;
