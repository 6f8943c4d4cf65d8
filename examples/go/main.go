// Places an order and writes its order.created event in the same transaction:
// if the transaction rolls back, no webhook exists; once it commits, postbox
// delivers it.
//
//	cd examples/go && DATABASE_URL=postgres://... go run . [customer] [total_cents]
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strconv"

	_ "github.com/lib/pq"
)

func main() {
	customer, totalCents := "ada@example.com", 1250
	if len(os.Args) > 1 {
		customer = os.Args[1]
	}
	if len(os.Args) > 2 {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			log.Fatalf("total_cents: %v", err)
		}
		totalCents = n
	}

	db, err := sql.Open("postgres", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback() // a no-op after Commit

	var orderID int64
	err = tx.QueryRowContext(ctx,
		"insert into orders (customer, total_cents) values ($1, $2) returning id",
		customer, totalCents).Scan(&orderID)
	if err != nil {
		log.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"id": orderID, "customer": customer, "total_cents": totalCents})
	var eventID string
	err = tx.QueryRowContext(ctx,
		`insert into postbox.outbox (event_type, payload, subject_type, subject_id)
		 values ('order.created', $1::jsonb, 'order', $2) returning event_id`,
		string(payload), strconv.FormatInt(orderID, 10)).Scan(&eventID)
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("order %d placed, event %s\n", orderID, eventID)
}
