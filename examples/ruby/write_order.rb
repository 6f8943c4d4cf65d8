# Places an order and writes its order.created event in the same transaction:
# if the transaction rolls back, no webhook exists; once it commits, postbox
# delivers it.
#
#   gem install pg   # or Debian's ruby-pg
#   DATABASE_URL=postgres://... ruby examples/ruby/write_order.rb [customer] [total_cents]
require "json"
require "pg"

customer = ARGV[0] || "ada@example.com"
total_cents = Integer(ARGV[1] || 1250)

conn = PG.connect(ENV.fetch("DATABASE_URL"))
begin
  conn.transaction do |tx|
    order_id = tx.exec_params(
      "insert into orders (customer, total_cents) values ($1, $2) returning id",
      [customer, total_cents]
    ).getvalue(0, 0).to_i
    event_id = tx.exec_params(
      "insert into postbox.outbox (event_type, payload, subject_type, subject_id) " \
      "values ('order.created', $1::jsonb, 'order', $2) returning event_id",
      [JSON.generate(id: order_id, customer: customer, total_cents: total_cents), order_id.to_s]
    ).getvalue(0, 0)
    puts "order #{order_id} placed, event #{event_id}"
  end
ensure
  conn.close
end
