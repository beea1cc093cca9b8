//! The pure core: bytes → probe → decision, the block policy, what is never blocked. No
//! I/O and no clock here: time is passed in, so every rule is unit- and property-tested.
//!
//! May use: nothing else of this crate.

pub mod block;
pub mod decisions;
pub mod detector;
pub mod ignore;
pub mod managers;
pub mod packet;
pub mod policy;
pub mod ports;
pub mod probe;
pub mod ratelimit;
pub mod records;
pub mod repeats;
pub mod stats;
