-- Whether apps' inserts NOTIFY at all ($1 = false for poll-only relays).
update postbox.wakeup
set notify = $1
where notify is distinct from $1
