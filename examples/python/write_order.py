#!/usr/bin/env python3
"""Places an order and writes its order.created event in the same transaction:
if the transaction rolls back, no webhook exists; once it commits, postbox
delivers it.

    DATABASE_URL=postgres://... python3 examples/python/write_order.py [customer] [total_cents]
"""
import os
import sys

import psycopg
from psycopg.types.json import Jsonb


def main():
    customer = sys.argv[1] if len(sys.argv) > 1 else "ada@example.com"
    total_cents = int(sys.argv[2]) if len(sys.argv) > 2 else 1250
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        with conn.transaction():
            (order_id,) = conn.execute(
                "insert into orders (customer, total_cents) values (%s, %s) returning id",
                (customer, total_cents),
            ).fetchone()
            (event_id,) = conn.execute(
                "insert into postbox.outbox (event_type, payload, subject_type, subject_id)"
                " values ('order.created', %s, 'order', %s) returning event_id",
                (Jsonb({"id": order_id, "customer": customer, "total_cents": total_cents}), str(order_id)),
            ).fetchone()
    print(f"order {order_id} placed, event {event_id}")


if __name__ == "__main__":
    main()
