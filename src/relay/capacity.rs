//! What this relay holds and has room for: its request slots, its requests in
//! flight per endpoint, and the deliveries it holds leases on.
//!
//! Two statements lease deliveries to a relay: its deliverer's claims and its
//! dispatcher's passes. Each takes the lease turn with a [`Room`] (free slots
//! in all and per endpoint), passes the room to its SQL, and books what the
//! SQL leased with [`Capacity::take`]. One turn at a time, so two statements
//! cannot both fill the same free slots.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::delivery::webhook::Claimed;

pub struct Capacity {
    concurrency: usize,
    endpoint_concurrency: usize,
    /// One permit per request slot.
    slots: Arc<Semaphore>,
    /// The lease turn; true once the relay stops taking new work.
    turn: Arc<AsyncMutex<bool>>,
    /// Requests in flight per endpoint, for the per-endpoint cap.
    endpoint_load: Mutex<HashMap<Uuid, usize>>,
    /// Leased but unrecorded deliveries, by id. Whatever is left here at
    /// shutdown is handed back at once instead of waiting out its lease.
    held: Mutex<HashMap<Uuid, HeldLease>>,
}

/// A delivery leased to this relay whose outcome is not recorded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub delivery_id: Uuid,
    pub lease_token: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    /// A first attempt from the outbox, which has no delivery row yet.
    pub from_outbox: Option<i64>,
}

impl HeldLease {
    fn of(delivery: &Claimed) -> Self {
        Self {
            delivery_id: delivery.id,
            lease_token: delivery.lease_token,
            event_id: delivery.event_id,
            endpoint_id: delivery.endpoint_id,
            from_outbox: delivery.from_outbox,
        }
    }
}

/// Room for new requests, held while one statement leases deliveries into
/// it: free request slots, and the free slots per endpoint.
pub struct Room {
    _turn: OwnedMutexGuard<bool>,
    permits: Vec<OwnedSemaphorePermit>,
    /// Endpoints with requests in flight from this relay ...
    pub busy: Vec<Uuid>,
    /// ... and their free slots.
    pub free: Vec<i32>,
    /// Free slots of every other endpoint.
    pub endpoint_cap: i32,
}

impl Room {
    /// Request slots in all.
    pub fn size(&self) -> usize {
        self.permits.len()
    }

    /// Whether an endpoint was at its cap: a finished request to it may let
    /// more of its deliveries be claimed.
    pub fn endpoint_full(&self) -> bool {
        self.free.iter().any(|free| *free <= 0)
    }
}

/// Deliveries leased to this relay, each holding its request slot.
pub struct Leased(Vec<(Claimed, OwnedSemaphorePermit)>);

impl Leased {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for Leased {
    type Item = (Claimed, OwnedSemaphorePermit);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Capacity {
    pub fn new(concurrency: usize, endpoint_concurrency: usize) -> Self {
        Self {
            concurrency,
            endpoint_concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            turn: Arc::default(),
            endpoint_load: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// Request slots in all.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Request slots free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Returns once `slots` request slots are free (without taking them).
    pub async fn wait_for(&self, slots: usize) {
        let slots = slots.min(self.concurrency).min(u32::MAX as usize) as u32;
        let _ = self.slots.acquire_many(slots).await;
    }

    /// Takes the lease turn and up to `want` free request slots (none once
    /// the relay is stopping). Waits only for the turn.
    pub async fn room(&self, want: usize) -> Room {
        let turn = Arc::clone(&self.turn).lock_owned().await;
        let stopping = *turn;
        let mut permits = Vec::new();
        while !stopping && permits.len() < want {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let cap = self.endpoint_concurrency;
        let load = locked(&self.endpoint_load);
        let (busy, free) =
            load.iter().map(|(endpoint, used)| (*endpoint, clamp_i32(cap.saturating_sub(*used)))).unzip();
        drop(load);
        Room { _turn: turn, permits, busy, free, endpoint_cap: clamp_i32(cap) }
    }

    /// Books deliveries that a statement leased into `room`: each takes a
    /// request slot and counts against its endpoint's cap. The turn and the
    /// slots left over go back.
    pub fn take(&self, room: Room, leased: Vec<Claimed>) -> Leased {
        let mut held = locked(&self.held);
        held.extend(leased.iter().map(|d| (d.id, HeldLease::of(d))));
        drop(held);
        let mut load = locked(&self.endpoint_load);
        for delivery in &leased {
            *load.entry(delivery.endpoint_id).or_default() += 1;
        }
        drop(load);
        let mut permits = room.permits.into_iter();
        Leased(
            leased
                .into_iter()
                .map(|delivery| {
                    let permit =
                        permits.next().expect("a statement leases no more deliveries than its room holds");
                    (delivery, permit)
                })
                .collect(),
        )
    }

    /// A request to `endpoint` finished: its endpoint slot is free again (the
    /// request slot goes back with its permit).
    pub fn request_finished(&self, endpoint: Uuid) {
        count_down(&mut locked(&self.endpoint_load), endpoint);
    }

    /// These deliveries' outcomes are recorded: their leases are no longer ours.
    pub fn recorded(&self, deliveries: impl IntoIterator<Item = Uuid>) {
        let mut held = locked(&self.held);
        for delivery in deliveries {
            held.remove(&delivery);
        }
    }

    /// Stops giving out room, once the statement holding the turn is done.
    pub async fn close(&self) {
        *self.turn.lock().await = true;
    }

    /// Every delivery still held, to be released.
    pub fn take_held(&self) -> Vec<HeldLease> {
        std::mem::take(&mut *locked(&self.held)).into_values().collect()
    }
}

fn clamp_i32(n: usize) -> i32 {
    n.min(i32::MAX as usize) as i32
}

/// `mutex`'s data, also after a thread panicked holding it: every map here
/// is changed in whole steps (an entry in or out, a count up or down), so
/// what a panic left is still a state worth going on from.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One less of `key`; a count that reaches zero leaves the map.
fn count_down<K: Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn delivery(endpoint: Uuid) -> Claimed {
        Claimed {
            id: Uuid::new_v4(),
            lease_token: Uuid::new_v4(),
            endpoint_id: endpoint,
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
            from_outbox: None,
        }
    }

    #[tokio::test]
    async fn room_holds_the_free_slots_and_each_endpoints_share() {
        let capacity = Capacity::new(3, 2);
        let endpoint = Uuid::new_v4();
        let room = capacity.room(10).await;
        assert_eq!((room.size(), room.endpoint_cap), (3, 2));
        assert!(room.busy.is_empty());

        let leased = capacity.take(room, vec![delivery(endpoint), delivery(endpoint)]);
        assert_eq!(leased.len(), 2);
        assert_eq!(capacity.available(), 1, "the slot left over went back");

        let room = capacity.room(10).await;
        assert_eq!((room.size(), room.busy.clone(), room.free.clone()), (1, vec![endpoint], vec![0]));
        assert!(room.endpoint_full());
        drop(room);

        capacity.request_finished(endpoint);
        drop(leased);
        let room = capacity.room(10).await;
        assert_eq!((room.size(), room.free.clone()), (3, vec![1]));
    }

    #[tokio::test]
    async fn one_room_at_a_time_and_none_after_close() {
        let capacity = Arc::new(Capacity::new(4, 4));
        let first = capacity.room(1).await;
        let mut waiting = tokio::spawn({
            let capacity = Arc::clone(&capacity);
            async move { capacity.room(10).await.size() }
        });
        let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(early.is_err(), "a second room waits for the turn");
        drop(first);
        assert_eq!(waiting.await.unwrap(), 4);

        capacity.close().await;
        assert_eq!(capacity.room(10).await.size(), 0);
    }

    #[tokio::test]
    async fn held_leases_are_given_back_once_unless_recorded() {
        let capacity = Capacity::new(4, 4);
        let endpoint = Uuid::new_v4();
        let (recorded, unrecorded) = (delivery(endpoint), delivery(endpoint));
        let expected = vec![HeldLease::of(&unrecorded)];
        let room = capacity.room(2).await;
        let _leased = capacity.take(room, vec![recorded.clone(), unrecorded]);
        capacity.recorded([recorded.id]);
        assert_eq!(capacity.take_held(), expected);
        assert_eq!(capacity.take_held(), vec![]);
    }
}
