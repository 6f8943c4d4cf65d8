-- Publishes this relay's outbound network policy, so that subscribing can
-- refuse inward IP literals up front. ($1 allow_private, $2 allow_cidrs)
update postbox.network_policy
set allow_private = $1,
    allow_cidrs = $2::text[]::cidr[],
    updated_at = now()
where allow_private is distinct from $1
   or allow_cidrs is distinct from $2::text[]::cidr[]
