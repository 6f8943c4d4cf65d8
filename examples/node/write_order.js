// Places an order and writes its order.created event in the same transaction:
// if the transaction rolls back, no webhook exists; once it commits, postbox
// delivers it.
//
//   DATABASE_URL=postgres://... node examples/node/write_order.js [customer] [total_cents]
import pg from "pg";

const customer = process.argv[2] ?? "ada@example.com";
const totalCents = Number(process.argv[3] ?? 1250);

const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
try {
  await client.query("begin");
  const order = await client.query(
    "insert into orders (customer, total_cents) values ($1, $2) returning id",
    [customer, totalCents],
  );
  const orderId = Number(order.rows[0].id);
  const event = await client.query(
    `insert into postbox.outbox (event_type, payload, subject_type, subject_id)
     values ('order.created', $1, 'order', $2) returning event_id`,
    [{ id: orderId, customer, total_cents: totalCents }, String(orderId)],
  );
  await client.query("commit");
  console.log(`order ${orderId} placed, event ${event.rows[0].event_id}`);
} catch (err) {
  await client.query("rollback");
  throw err;
} finally {
  await client.end();
}
