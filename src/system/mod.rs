//! The host around the daemon: its addresses, routes and resolvers, listening sockets,
//! privileges, readiness, the clock, the files a root daemon may trust, and the host's
//! firewall managers.
//!
//! May use: `core`.

pub mod clock;
pub mod files;
pub mod host;
pub mod listening;
pub mod managers;
pub mod notify;
pub mod privileges;
pub mod proc;
pub mod socket;
