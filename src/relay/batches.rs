//! First attempts sent straight from the outbox, counted per dispatch batch.
//!
//! A dispatch pass that hands first attempts to this relay's deliverer leaves
//! a batch row in `postbox.dispatch_batches`, which stands for them until
//! their deliveries are written. The write of a batch's last outstanding
//! outcome deletes the row in the same statement. A batch this relay never
//! finishes (it died, released the rest at shutdown, or gave up writing an
//! outcome) runs out of lease, and whatever of it has no delivery row is
//! dispatched again: so an outcome counts only once written.

use std::{collections::HashMap, sync::Mutex};

use uuid::Uuid;

use crate::{
    delivery::webhook::Claimed,
    relay::capacity::{count_down, locked},
};

/// First attempts not yet recorded, per batch (its claim token).
#[derive(Debug, Default)]
pub struct OpenBatches {
    unrecorded: Mutex<HashMap<Uuid, usize>>,
}

impl OpenBatches {
    /// Counts the first attempts among `deliveries` against their batches.
    pub fn opened<'a>(&self, deliveries: impl IntoIterator<Item = &'a Claimed>) {
        let mut unrecorded = locked(&self.unrecorded);
        for delivery in deliveries.into_iter().filter(|d| d.from_outbox.is_some()) {
            *unrecorded.entry(delivery.lease_token).or_default() += 1;
        }
    }

    /// The batches that outcomes of first attempts of `batches` (claim
    /// tokens, one per outcome) would finish, once written: their rows go
    /// with that write. Counts nothing: see [`Self::written`].
    pub fn finished_by(&self, batches: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let unrecorded = locked(&self.unrecorded);
        let mut outcomes: HashMap<Uuid, usize> = HashMap::new();
        for token in batches {
            *outcomes.entry(token).or_default() += 1;
        }
        outcomes
            .into_iter()
            .filter(|(token, n)| unrecorded.get(token) == Some(n))
            .map(|(token, _)| token)
            .collect()
    }

    /// These outcomes are written: taken off their batches' counts.
    pub fn written(&self, batches: impl IntoIterator<Item = Uuid>) {
        let mut unrecorded = locked(&self.unrecorded);
        for token in batches {
            count_down(&mut unrecorded, token);
        }
    }

    /// These outcomes were given up (the database was away longer than their
    /// lease): no later write may finish their batches, whose rows must run
    /// out of lease so that the events are dispatched again.
    pub fn abandoned(&self, batches: impl IntoIterator<Item = Uuid>) {
        let mut unrecorded = locked(&self.unrecorded);
        for token in batches {
            unrecorded.remove(&token);
        }
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
        assert_eq!(batches.finished_by([one]), Vec::<Uuid>::new());
        batches.written([one]);
        let mut finished = batches.finished_by([two, one]);
        finished.sort();
        let mut expected = vec![one, two];
        expected.sort();
        assert_eq!(finished, expected);
        batches.written([two, one]);
        assert_eq!(batches.finished_by([one]), Vec::<Uuid>::new(), "a finished batch is forgotten");
    }

    #[test]
    fn an_outcome_not_written_finishes_nothing() {
        let batch = Uuid::new_v4();
        let batches = OpenBatches::default();
        batches.opened(&[first_attempt(batch), first_attempt(batch)]);
        // The first outcome's write failed: the second is not the last.
        assert_eq!(batches.finished_by([batch]), Vec::<Uuid>::new());
        batches.written([batch]);
        assert_eq!(batches.finished_by([batch]), vec![batch]);
    }

    #[test]
    fn an_abandoned_batch_is_never_finished() {
        let batch = Uuid::new_v4();
        let batches = OpenBatches::default();
        batches.opened(&[first_attempt(batch), first_attempt(batch)]);
        batches.abandoned([batch]);
        assert_eq!(batches.finished_by([batch]), Vec::<Uuid>::new());
    }

    #[test]
    fn claimed_deliveries_open_no_batch() {
        let batches = OpenBatches::default();
        let mut claimed = first_attempt(Uuid::new_v4());
        claimed.from_outbox = None;
        batches.opened([&claimed]);
        assert_eq!(batches.finished_by([claimed.lease_token]), Vec::<Uuid>::new());
    }
}
