-- A relay draining a backlog: apps' inserts skip NOTIFY until $1 seconds from now.
update postbox.wakeup
set busy_until = greatest(busy_until, now() + make_interval(secs => $1::float8))
