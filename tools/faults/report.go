package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgphi/pgphi/internal/machine"
)

// results is everything one campaign saw.
type results struct {
	machine   machine.Info
	base      *baseline
	trials    []*trial
	skipped   map[string]string
	durations string
	binInfo   string
}

func (r *results) add(t *trial) { r.trials = append(r.trials, t) }

func (r *results) skip(scenario, why string) {
	if r.skipped == nil {
		r.skipped = map[string]string{}
	}
	r.skipped[scenario] = why
	logf("%s: %s", scenario, why)
}

// failures is the number of failed trials.
func (r *results) failures() int {
	n := 0
	for _, t := range r.trials {
		if len(t.failures) > 0 {
			n++
		}
	}
	return n
}

// scenarioRow sums the trials of one scenario.
type scenarioRow struct {
	name                                    string
	trials, injected, missed, reruns, fails int
	ops, refused                            int
}

func (r *results) rows() []scenarioRow {
	var out []scenarioRow
	idx := map[string]int{}
	for _, t := range r.trials {
		i, ok := idx[t.scenario]
		if !ok {
			i = len(out)
			idx[t.scenario] = i
			out = append(out, scenarioRow{name: t.scenario})
		}
		s := &out[i]
		s.trials++
		s.injected += t.injected
		s.missed += t.missed
		s.reruns += t.reruns
		s.ops += t.writes.ops
		s.refused += t.writes.refused
		if len(t.failures) > 0 {
			s.fails++
		}
	}
	return out
}

var scenarioText = map[string]string{
	"control":        "control: no fault (measures the durations)",
	"kill-apply":     "SIGKILL during apply",
	"kill-cleanup":   "SIGKILL during cleanup",
	"kill-rollback":  "SIGKILL during rollback (odd trials before cleanup, even after)",
	"kill-reencrypt": "SIGKILL during `keys rotate --reencrypt`",
	"restart":        "`pg_ctl restart -m fast` during the backfill",
	"conn-drop":      "`pg_terminate_backend` of pgphi's sessions during apply",
	"lock":           "lock held by another session at expand",
	"disk-full":      "tablespace on a small tmpfs fills up during the backfill",
}

func mdEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

// markdown renders the results section.
func (r *results) markdown(o options) string {
	var b strings.Builder
	m := r.machine
	fmt.Fprintf(&b, "### Campaign of %s\n\n", m.Date.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- Command: `%s` (seed %d; `go run ./tools/faults -scenario NAME -seed %d` repeats one scenario's draws)\n", o.commandLine, o.seed, o.seed)
	fmt.Fprintf(&b, "- pgphi: %s\n", r.binInfo)
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s, %s, %s; data directory on %s\n", m.CPUs, m.CPUModel, m.Memory, m.GoVersion, m.Filesystem)
	fmt.Fprintf(&b, "- Load average at start %s, at end %s\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "- PostgreSQL %s: %s\n", m.PGVersion, m.Settings)
	if r.base != nil {
		fmt.Fprintf(&b, "- Table: `patient`, %s rows (%d with planted values), %s, 7 protected columns with the demo config's search kinds; batches of 500, chunks of 5,000 rows, 2 workers\n",
			thousands(r.base.rows), len(r.base.canaryKeys), r.base.size)
	}
	fmt.Fprintf(&b, "- Application writer: one insert, update or delete every %s on a pool of %s rows and its own rows\n", o.writerEvery, thousands(int64(o.poolSize)))
	fmt.Fprintf(&b, "- Durations the random moments were drawn within, at the end of the campaign (the control runs under the writer, lowered to a faster uninterrupted run after a missed kill): %s\n", r.durations)
	fmt.Fprintf(&b, "- Campaign duration: %s\n\n", time.Since(started).Round(time.Second))

	b.WriteString("| scenario | trials | faults injected | missed (run ended first) | reruns needed | failed trials |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	var tot scenarioRow
	for _, s := range r.rows() {
		txt := scenarioText[s.name]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d |\n", txt, s.trials, s.injected, s.missed, s.reruns, s.fails)
		tot.trials += s.trials
		tot.injected += s.injected
		tot.missed += s.missed
		tot.reruns += s.reruns
		tot.fails += s.fails
	}
	for _, s := range allScenarios {
		if why, ok := r.skipped[s]; ok {
			fmt.Fprintf(&b, "| %s | 0 | – | – | – | – (%s) |\n", scenarioText[s], mdEscape(why))
		}
	}
	fmt.Fprintf(&b, "| **total** | **%d** | **%d** | **%d** | **%d** | **%d** |\n\n", tot.trials, tot.injected, tot.missed, tot.reruns, tot.fails)

	if tot.fails == 0 {
		b.WriteString("Failures: none. Every trial ended with `pgphi verify` exit 0 (where the table is encrypted), the expected row count, the untouched rows identical to the original, the written rows holding what the application last wrote, and no planted value or stack trace in any output.\n\n")
	} else {
		b.WriteString("Failures:\n\n")
		for _, t := range r.trials {
			for _, f := range t.failures {
				fmt.Fprintf(&b, "- %s (seed %d): %s\n", t.name, o.seed, mdEscape(f))
			}
		}
		b.WriteString("\n")
	}

	b.WriteString("<details><summary>Every trial</summary>\n\n")
	b.WriteString("| trial | fault | end state | result | reruns | writer ops (refused) | rows +/− | time | notes |\n")
	b.WriteString("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |\n")
	for _, t := range r.trials {
		res := "ok"
		if len(t.failures) > 0 {
			res = "**failed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %d (%d) | +%d −%d | %s | %s |\n", t.name, mdEscape(t.fault), t.endState, res, t.reruns,
			t.writes.ops, t.writes.refused, t.writes.inserted, t.writes.deleted, t.took.Round(100*time.Millisecond), mdEscape(strings.Join(t.notes, "; ")))
	}
	b.WriteString("\n</details>\n")
	return b.String()
}

const (
	beginMarker = "<!-- faults:results begin -->"
	endMarker   = "<!-- faults:results end -->"
)

// writeResults replaces the results block of path (or appends one).
func writeResults(path, md string) error {
	block := beginMarker + "\n" + md + endMarker + "\n"
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return os.WriteFile(path, []byte("# Reliability\n\n## Results\n\n"+block), 0o644)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(replaceBlock(string(old), block)), 0o644)
}

// replaceBlock puts block in place of the marked block of s, or at its end.
func replaceBlock(s, block string) string {
	i := strings.Index(s, beginMarker)
	j := strings.Index(s, endMarker)
	if i >= 0 && j > i {
		return s[:i] + block + strings.TrimPrefix(s[j+len(endMarker):], "\n")
	}
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s + "\n" + block
}

// thousands formats n with commas.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
