-- Records a batch of finished attempts (parallel arrays, one element per
-- attempt) and moves each delivery to its next state, but only where the claim
-- token still matches: a relay whose lease ran out changes nothing.
-- Returns one row per recorded attempt. Index: deliveries_pkey.
with result as (
    select *
    from unnest($1::uuid[], $2::uuid[], $3::int[], $4::float8[], $5::int[], $6::text[],
                $7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[])
         as r(delivery_id, lease_token, attempt_number, started_at, duration_ms, request_headers,
              response_status, response_headers, response_body, error, status, retry_in)
),
settled as (
    update postbox.deliveries d
    set status = r.status,
        attempt_count = r.attempt_number,
        next_attempt_at = case when r.status = 'pending'
                               then now() + make_interval(secs => r.retry_in) end,
        lease_token = null,
        last_error = case when r.status <> 'succeeded'
                          then coalesce(r.error, 'HTTP ' || r.response_status) end,
        updated_at = now()
    from result r
    where d.id = r.delivery_id
      and d.lease_token = r.lease_token
    returning d.id
)
insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, request_headers,
                              response_status, response_headers, response_body, error)
select r.delivery_id, r.attempt_number, to_timestamp(r.started_at), r.duration_ms,
       r.request_headers::jsonb, r.response_status, r.response_headers::jsonb, r.response_body, r.error
from result r
join settled s on s.id = r.delivery_id
returning delivery_id
