-- Hands claimed deliveries back at once (shutdown): no holder, so they are
-- due again (they were due when claimed), and the attempt their claim spent
-- is given back (it was not made, or not finished).
-- Pairs of (delivery id, claim token) as parallel arrays. Index: deliveries_pkey.
update postbox.deliveries d
set lease_token = null,
    leased_until = null,
    attempt_count = greatest(d.attempt_count - 1, 0)
from unnest($1::uuid[], $2::uuid[]) as r(id, lease_token)
where d.id = r.id
  and d.lease_token = r.lease_token
  and d.status = 'pending'
