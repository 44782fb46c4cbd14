package redact

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fuzzMarkers are planted before the canary, as the templates of PostgreSQL,
// pgx, the Go standard library and pg_repack write them.
var fuzzMarkers = []string{
	`"`, `: "`, ` '`, `=`, `[`, `{`, `)=(`, "Key (", `("`,
	"unable to encode ", "cannot parse UUID ", "json: cannot unmarshal number ",
	"unexpected trailing data: ", "bad interval second format: ", "Failing row contains (",
	"byte sequence ", "\nDETAIL:  ", " CONTEXT: ", "\nLINE 1: ", "ERROR: query failed: ERROR:  ",
}

// FuzzRedactMessage plants a canary after a value marker, inside a value
// the fuzzer shapes (quotes, brackets, newlines, JSON...), after any prefix
// and before any suffix; the canary must never survive Message nor Error.
func FuzzRedactMessage(f *testing.F) {
	for i := range fuzzMarkers {
		for _, v := range values {
			f.Add("invalid input syntax for type integer", uint8(i), v, v, "\" (SQLSTATE 22P02)")
		}
	}
	f.Fuzz(func(t *testing.T, prefix string, m uint8, v1, v2, suffix string) {
		marker := fuzzMarkers[int(m)%len(fuzzMarkers)]
		if strings.Contains(prefix+marker, canary) {
			t.Skip()
		}
		text := prefix + marker + v1 + canary + v2 + suffix
		if got := Message(text); strings.Contains(got, canary) {
			t.Fatalf("canary survived Message:\n in: %q\nout: %q", text, got)
		}
		if got := Error(fmt.Errorf("writing batch: %w", errors.New(text))).Error(); strings.Contains(got, canary) {
			t.Fatalf("canary survived Error:\n in: %q\nout: %q", text, got)
		}
	})
}
