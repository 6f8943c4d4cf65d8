-- The example apps' own table, and the event type they emit. Run once:
--   psql "$DATABASE_URL" -f examples/setup.sql
create table if not exists orders (
    id          bigint generated always as identity primary key,
    customer    text not null,
    total_cents int not null,
    created_at  timestamptz not null default now()
);
select postbox.register_event_type('order.created', 'An order was placed');
