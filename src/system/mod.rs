//! The host around the daemon: its addresses, routes and resolvers, listening sockets,
//! privileges, readiness, the clock, and the files a root daemon may trust.
//!
//! May use: `core`.

pub mod clock;
pub mod files;
pub mod host;
pub mod listening;
pub mod notify;
pub mod privileges;
pub mod proc;
