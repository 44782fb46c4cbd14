package pgphi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// The canonical text produced in Go is what PostgreSQL prints for the value
// under pgphi's session settings (docs/FORMAT.md §2.4): each case is sent to
// the server as a typed Go value where pgx can (so the server, not this
// package, decides what is stored) or as text, and printed back.
func TestCanonicalMatchesPostgres(t *testing.T) {
	ctx := context.Background()
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	for name, v := range canonicalSettings {
		if _, err := conn.Exec(ctx, "SELECT set_config($1, $2, false)", name, v); err != nil {
			t.Fatal(err)
		}
	}
	auckland, _ := time.LoadLocation("Pacific/Auckland")
	cases := []struct {
		typ   string
		value any
		sent  any // what the server is given, when not the value itself
	}{
		{"text", "Zoë  O’Brien ", nil},
		{"character(6)", "ab", nil},
		{"character varying(10)", "ab ", nil},
		{"smallint", int16(-32768), nil},
		{"integer", 42, nil},
		{"bigint", int64(math.MinInt64), nil},
		{"bigint", "-17", nil},
		{"numeric", "12345.6700", nil},
		{"numeric", 0.1, "0.1"},
		{"numeric", -0.0, "0"},
		{"numeric(10,2)", 5, "5"},
		{"numeric(10,2)", 1.5, "1.5"},
		{"numeric(10,2)", "-3.10", nil},
		{"numeric", math.NaN(), "NaN"},
		{"boolean", true, nil},
		{"date", time.Date(2024, 2, 29, 23, 30, 0, 0, auckland), "2024-02-29"},
		{"date", "0044-03-15 BC", nil},
		{"date", "infinity", nil},
		{"timestamp", time.Date(2024, 2, 29, 13, 45, 30, 500000000, auckland), "2024-02-29 13:45:30.5"},
		{"timestamp(3)", time.Date(2024, 1, 1, 0, 0, 0, 123000000, time.UTC), "2024-01-01 00:00:00.123"},
		{"timestamp with time zone", time.Date(2024, 2, 29, 23, 59, 59, 123456000, auckland), nil},
		{"timestamp with time zone", time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC), nil},
		{"json", json.RawMessage(`{"b": 1,  "a":[true, null]}`), `{"b": 1,  "a":[true, null]}`},
		{"jsonb", json.RawMessage(`{"name":{"given":"Zoë"},"contacts":[null],"a":1,"a":2}`), `{"name":{"given":"Zoë"},"contacts":[null],"a":1,"a":2}`},
		{"jsonb", `[1.50, -0, 1e2, 1.5E-3, 25e-1, "\u0007\t\"\\/<>&\u2028", {"bb":1,"a":{},"c":[]}]`, nil},
		{"jsonb", `0.000`, nil},
		{"bytea", []byte{0, 0xff, 0x10}, nil},
		{"bytea", []byte{}, nil},
		{"uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", nil},
		{"double precision", 0.1, nil},
		{"double precision", 1e15, nil},
		{"double precision", 123456789012345.6, nil},
		{"double precision", 1e-4, nil},
		{"double precision", 1.5e-5, nil},
		{"double precision", -1e300, nil},
		{"double precision", math.Copysign(0, -1), nil},
		{"double precision", math.Inf(1), nil},
		{"real", float32(0.1), nil},
		{"real", float32(123456), nil},
		{"real", float32(1234567), nil},
		{"real", float32(1e-4), nil},
		{"real", float32(1.5e-5), nil},
		{"interval", "1 year 2 mons 3 days 04:05:06", nil},
	}
	for _, c := range cases {
		ct := parseColumnType(c.typ)
		got, err := canonical(ct, "public.t.c", c.value)
		if err != nil {
			t.Errorf("%s %#v: %v", c.typ, c.value, err)
			continue
		}
		sent := c.sent
		if sent == nil {
			sent = c.value
		}
		var want string
		var q string
		if _, isString := sent.(string); isString {
			q = "SELECT $1::text::" + c.typ + "::text"
		} else {
			q = "SELECT $1::" + c.typ + "::text"
		}
		if err := conn.QueryRow(ctx, q, sent).Scan(&want); err != nil {
			t.Errorf("%s %#v: %v", c.typ, c.value, err)
			continue
		}
		if got != want {
			t.Errorf("%s %#v: Go %q, PostgreSQL %q", c.typ, c.value, got, want)
		}
	}
}

// Values that do not fit are refused with ErrValue, never echoing them.
func TestCanonicalRefuses(t *testing.T) {
	for _, c := range []struct {
		typ   string
		value any
	}{
		{"text", 42},
		{"integer", "042"},
		{"integer", "+42"},
		{"smallint", 40000},
		{"integer", 1.5},
		{"numeric(10,2)", "1.5"},
		{"numeric(10,2)", 1.005},
		{"numeric", "1e5"},
		{"numeric", "-0"},
		{"boolean", "yes"},
		{"date", "2023-02-29"},
		{"date", "29/02/2024"},
		{"date", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"timestamp(0)", time.Date(2024, 1, 1, 0, 0, 0, 5e8, time.UTC)},
		{"timestamp", "2024-01-01 00:00:00.50"},
		{"timestamp with time zone", "2024-01-01 00:00:00+01"},
		{"json", `{"a":`},
		{"jsonb", `{"a":"\u0000"}`},
		{"bytea", `\xFF`},
		{"uuid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"},
		{"double precision", "0.10"},
		{"real", 0.1},
		{"interval", time.Second},
	} {
		_, err := canonical(parseColumnType(c.typ), "public.t.c", c.value)
		if !errors.Is(err, ErrValue) {
			t.Errorf("%s %#v: %v", c.typ, c.value, err)
		}
	}
}
