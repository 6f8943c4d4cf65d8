//! First attempts sent straight from the outbox, counted per dispatch batch.
//!
//! A dispatch pass that hands first attempts to this relay's deliverer leaves
//! a batch row in `postbox.dispatch_batches`, which stands for them until
//! their deliveries are written. The outcome of a batch's last first attempt
//! deletes the row in the same statement; a batch this relay never finishes
//! (it died, or released the rest at shutdown) runs out of lease, and its
//! events are dispatched again.

use std::{collections::HashMap, sync::Mutex};

use uuid::Uuid;

use crate::delivery::webhook::Claimed;

/// First attempts not yet recorded, per batch (its claim token).
#[derive(Debug, Default)]
pub struct OpenBatches {
    unrecorded: Mutex<HashMap<Uuid, usize>>,
}

impl OpenBatches {
    /// Counts the first attempts among `deliveries` against their batches.
    pub fn opened<'a>(&self, deliveries: impl IntoIterator<Item = &'a Claimed>) {
        let mut unrecorded = self.unrecorded.lock().expect("batch lock is never poisoned");
        for delivery in deliveries.into_iter().filter(|d| d.from_outbox.is_some()) {
            *unrecorded.entry(delivery.lease_token).or_default() += 1;
        }
    }

    /// Takes the outcomes of first attempts of `batches` (claim tokens, one
    /// per outcome) off their counts, and returns the batches this finishes.
    /// Call once per outcome, before the first try at recording it.
    pub fn recorded(&self, batches: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let mut unrecorded = self.unrecorded.lock().expect("batch lock is never poisoned");
        let mut finished = Vec::new();
        for token in batches {
            if let Some(left) = unrecorded.get_mut(&token) {
                *left -= 1;
                if *left == 0 {
                    unrecorded.remove(&token);
                    finished.push(token);
                }
            }
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_attempt(batch: Uuid) -> Claimed {
        Claimed {
            id: Uuid::new_v4(),
            lease_token: batch,
            endpoint_id: Uuid::new_v4(),
            attempt_number: 1,
            event_id: Uuid::new_v4(),
            event_type: "order.created".into(),
            occurred_at: "2026-01-01T00:00:00Z".into(),
            payload: "{}".into(),
            previous: None,
            actor: None,
            url: "https://example.com/".into(),
            secrets: vec![],
            headers: serde_json::json!({}),
            defect: None,
            leased_at: std::time::Instant::now(),
            from_outbox: Some(1),
        }
    }

    #[test]
    fn a_batch_finishes_with_its_last_outcome_only() {
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        let batches = OpenBatches::default();
        batches.opened(&[first_attempt(one), first_attempt(one), first_attempt(two)]);
        assert_eq!(batches.recorded([one]), Vec::<Uuid>::new());
        assert_eq!(batches.recorded([two, one]), vec![two, one]);
        assert_eq!(batches.recorded([one]), Vec::<Uuid>::new(), "a finished batch is forgotten");
    }

    #[test]
    fn claimed_deliveries_open_no_batch() {
        let batches = OpenBatches::default();
        let mut claimed = first_attempt(Uuid::new_v4());
        claimed.from_outbox = None;
        batches.opened([&claimed]);
        assert_eq!(batches.recorded([claimed.lease_token]), Vec::<Uuid>::new());
    }
}
