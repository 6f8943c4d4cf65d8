-- The backlog is drained: apps' inserts wake relays again.
update postbox.wakeup
set busy_until = '-infinity'
where busy_until > now()
