//! The control socket: `portsentry list | block | unblock | status` talk to the running
//! daemon. `protocol` is what goes over the socket (and the client); `server` the daemon's
//! end, which writes through the block policy and the firewall like the responder does.
//!
//! May use: `core`, `config`, `firewall`, `dataplane` (messages to the packet thread),
//! `system`.

pub mod protocol;
pub mod server;

pub use protocol::{parse_request, request, request_to, Request};
pub use server::{bind, Server, StatusInfo};
