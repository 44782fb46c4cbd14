package pgphi_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi"
)

// One encrypted, searchable row: open the client, seal the row's protected
// values, write them with the application's own INSERT.
func ExampleClient_Row() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL) // the application's pool
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(exampleKeyFile))
	if err != nil {
		log.Fatal(err)
	}
	row, err := client.Row(ctx, "patient", pgphi.Key{"uid": "P10"}, map[string]any{
		"last_name":     "Okafor",
		"date_of_birth": time.Date(1975, 3, 14, 0, 0, 0, 0, time.UTC),
		"visits":        2,
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO patient (uid, last_name, last_name_encrypted, last_name_bidx,
		date_of_birth, date_of_birth_encrypted, date_of_birth_bidx, visits, visits_encrypted)
		VALUES ('P10', $1, $2, $3, $4, $5, $6, $7, $8)`,
		row["last_name"], row["last_name_encrypted"], row["last_name_bidx"],
		row["date_of_birth"], row["date_of_birth_encrypted"], row["date_of_birth_bidx"],
		row["visits"], row["visits_encrypted"])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(row.Columns())
	// Output: [date_of_birth date_of_birth_bidx date_of_birth_encrypted last_name last_name_bidx last_name_encrypted visits visits_encrypted]
}

// Find returns the keys of exactly the matching rows; the reason is audited.
func ExampleClient_Find() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(exampleKeyFile))
	if err != nil {
		log.Fatal(err)
	}
	keys, err := client.Find(ctx, "patient", "last_name", pgphi.Query{Kind: pgphi.Phonetic, Value: "smith"}, "front desk: patient at the counter")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(keys)
	keys, err = client.Find(ctx, "patient", "phone", pgphi.Query{Kind: pgphi.Last4, Value: "0100"}, "callback")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(keys)
	// Output:
	// [map[uid:P1] map[uid:P2]]
	// [map[uid:P2]]
}

// Decrypt opens a ciphertext read by the application's own query.
func ExampleClient_Decrypt() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(exampleKeyFile))
	if err != nil {
		log.Fatal(err)
	}
	var ct []byte
	if err := pool.QueryRow(ctx, "SELECT date_of_birth_encrypted FROM patient WHERE uid = 'P1'").Scan(&ct); err != nil {
		log.Fatal(err)
	}
	text, null, err := client.Decrypt(ctx, "patient", "date_of_birth", pgphi.Key{"uid": "P1"}, ct, "birthday card")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(text, null)
	// Output: 1980-02-29 false
}

// Read returns what the application would have read, before and after
// cutover.
func ExampleClient_Read() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(exampleKeyFile))
	if err != nil {
		log.Fatal(err)
	}
	text, null, err := client.Read(ctx, "patient", "phone", pgphi.Key{"uid": "P3"}, "chart view")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q %v\n", text, null)
	// Output: "" true
}

// FindRows finds rows and reads columns of each in one call, with one audit
// record: the compatibility read, so before use_encrypted_search the values
// are the plaintext's.
func ExampleClient_FindRows() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(exampleKeyFile))
	if err != nil {
		log.Fatal(err)
	}
	rows, err := client.FindRows(ctx, "patient", "last_name", pgphi.Query{Kind: pgphi.Exact, Value: "JONES"},
		[]string{"last_name", "date_of_birth", "phone"}, "front desk: returning patient")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rows {
		fmt.Println(r.Key["uid"], r.Values["last_name"].Text, r.Values["date_of_birth"].Text, r.Values["phone"].Null)
	}
	// Output: P3 Jones 2001-12-24 true
}
