package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// reencryptRun is `pgphi keys rotate --reencrypt` on an applied database:
// the run (time, CPU, memory, the writer's stalls) and what it moved.
type reencryptRun struct {
	applyRun
	ciphertexts int64 // non-NULL ciphertexts before the rotation
	sealed      int64 // ciphertexts the command says it re-encrypted
	stale       int64 // ciphertexts under another key than the new one, after
	keyID       int64 // the new active key
	backfill    float64
	applyRate   float64 // the whole apply command's rows/s
}

var reencryptedRe = regexp.MustCompile(`: (\d+) ciphertexts re-encrypted under data key (\d+)`)

// reencryptBench rotates the data key of from's database and re-encrypts
// every ciphertext under the new one, with the writer running, and counts
// the ciphertexts before and after in SQL. The config is from's: the same
// workers and batch size as its apply.
func (e *env) reencryptBench(ctx context.Context, res *results, from *applyRun) *reencryptRun {
	rr := &reencryptRun{applyRun: applyRun{name: "pgphi keys rotate --reencrypt (every ciphertext to a new data key)", db: from.db, config: from.config, rows: from.rows}}
	rr.applyRate = from.rate()
	for _, st := range from.steps {
		if strings.HasPrefix(st.name, "backfill") && st.took > 0 {
			rr.backfill = float64(from.rows) / st.took.Seconds()
		}
	}
	rr.err = func() error {
		conn, err := e.connect(ctx, from.db)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var nonNull []string
		for _, c := range phiColumns {
			nonNull = append(nonNull, fmt.Sprintf("(%s IS NOT NULL)::int", pgx.Identifier{c + "_encrypted"}.Sanitize()))
		}
		if err := conn.QueryRow(ctx, "SELECT COALESCE(sum("+strings.Join(nonNull, " + ")+"), 0)::bigint FROM public.patient").Scan(&rr.ciphertexts); err != nil {
			return err
		}
		w, err := startWriter(ctx, e.cl.URL(from.db), e.o.writerEvery)
		if err != nil {
			return err
		}
		logf("%s: %d rows, %d ciphertexts, concurrent writer every %s", rr.name, rr.rows, rr.ciphertexts, e.o.writerEvery)
		r, err := e.runPgphi(ctx, from.db, "reencrypt", nil, "keys", "rotate", "--reencrypt", "--reason", "benchmark", "--config", from.config)
		rr.writer = w.stop()
		rr.took, rr.maxRSS, rr.steps, rr.cpu, rr.server = r.took, r.maxRSS, r.steps, r.cpu, r.server
		rr.logTail = tail(r.output, 25)
		if err != nil {
			return err
		}
		m := reencryptedRe.FindStringSubmatch(r.output)
		if m == nil {
			return fmt.Errorf("pgphi keys rotate --reencrypt did not say what it re-encrypted:\n%s", rr.logTail)
		}
		rr.sealed, _ = strconv.ParseInt(m[1], 10, 64)
		rr.keyID, _ = strconv.ParseInt(m[2], 10, 64)
		var stale []string
		for _, c := range phiColumns {
			stale = append(stale, fmt.Sprintf("(%[1]s IS NOT NULL AND substr(%[1]s, 2, 4) <> int4send($1::int))::int", pgx.Identifier{c + "_encrypted"}.Sanitize()))
		}
		if err := conn.QueryRow(ctx, "SELECT COALESCE(sum("+strings.Join(stale, " + ")+"), 0)::bigint FROM public.patient", rr.keyID).Scan(&rr.stale); err != nil {
			return err
		}
		logf("%s: %s (%.0f rows/s = %.2fx apply's backfill), %d ciphertexts re-encrypted, %d left under another key; CPU per 1,000 rows %s + server %s; writer max stall %s over %d updates",
			rr.name, rr.took.Round(time.Millisecond), rr.rate(), rr.rate()/rr.backfill, rr.sealed, rr.stale, perK(rr.cpu, rr.rows), perK(rr.server, rr.rows),
			rr.writer.max.Round(time.Millisecond), rr.writer.n)
		return nil
	}()
	if rr.err != nil {
		res.note("%s failed: %v", rr.name, rr.err)
	}
	return rr
}

// complete: every ciphertext there was is re-encrypted and none is left
// under another key.
func (rr *reencryptRun) complete() bool {
	return rr != nil && rr.err == nil && rr.sealed == rr.ciphertexts && rr.stale == 0
}

// markdown is the re-encryption section of the report.
func (rr *reencryptRun) markdown() string {
	if rr == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("#### Re-encryption under a new data key against apply\n\n")
	if rr.err != nil {
		fmt.Fprintf(&b, "`pgphi keys rotate --reencrypt` failed: %s\n\n", strings.ReplaceAll(trimTo(rr.err.Error(), 200), "|", "\\|"))
		return b.String()
	}
	b.WriteString("| run | rows | ciphertexts | time | rows/s | × apply's backfill step | × the whole apply | CPU per 1,000 rows: client + server |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	cpu := fmtDur(perK(rr.cpu, rr.rows))
	if rr.server > 0 {
		cpu += " + " + fmtDur(perK(rr.server, rr.rows))
	}
	fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n\n", rr.name, thousands(int64(rr.rows)), thousands(rr.sealed), fmtDur(rr.took), fmtRate(rr.rate()),
		ratio(rr.rate(), rr.backfill), ratio(rr.rate(), rr.applyRate), cpu)
	fmt.Fprintf(&b, "On the database of \"pgphi apply, no search kinds\" above, with the same config (workers, batch size) and the same writer: "+
		"the command rotates to data key %d, decrypts every ciphertext with its old key and seals it again with the new one over leased chunks, "+
		"then counts what is left under an older key (%s after this run, counted again in SQL). "+
		"Apply's backfill step does the same amount of sealing from plaintext; the re-encryption also decrypts.\n\n", rr.keyID, thousands(rr.stale))
	return b.String()
}
