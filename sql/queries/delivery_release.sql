-- Hands claimed deliveries back at once (shutdown): due now, no holder.
-- Pairs of (delivery id, claim token) as parallel arrays. Index: deliveries_pkey.
update postbox.deliveries d
set next_attempt_at = now(),
    lease_token = null
from unnest($1::uuid[], $2::uuid[]) as r(id, lease_token)
where d.id = r.id
  and d.lease_token = r.lease_token
  and d.status = 'pending'
