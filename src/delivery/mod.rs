//! One attempt on the wire: the request a delivery becomes ([`webhook`]), its
//! signature ([`signing`]), the network policy that decides where it may go
//! ([`netpolicy`]), the HTTP call itself ([`sender`]), what the outcome
//! means for the next attempt ([`retry`]), and what of it may be kept and
//! shown ([`redact`]). No database access here; all but
//! [`sender`] is pure and unit-tested without I/O.

pub mod netpolicy;
pub mod redact;
pub mod retry;
pub mod sender;
pub mod signing;
pub mod webhook;
