//! The loops that move work: outbox to deliveries ([`dispatcher`]), deliveries
//! to HTTP ([`deliverer`]), and the pruning of what retention lets go
//! ([`retention`]), with what they share: how they wake ([`wakeup`]), how much
//! room a relay has ([`capacity`]), how they back off after an error
//! ([`backoff`]) and what happens when one stalls or fails ([`supervisor`]).

pub mod backoff;
pub mod capacity;
pub mod deliverer;
pub mod dispatcher;
pub mod retention;
pub mod supervisor;
pub mod wakeup;
