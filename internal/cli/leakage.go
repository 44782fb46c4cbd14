package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/engine"
)

// leakageCommand measures what the blind index terms of every searchable
// column leak, on the real data.
func (a *app) leakageCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "leakage",
		Short: "Measure, on the data, how many distinct values share each blind index term and term array, and what each query kind costs",
		Long: `leakage computes the terms of every value of every searchable column (it needs
the keys: values are read as plaintext before cleanup and decrypted after) and
prints, per column and term family: distinct values (messages), distinct terms,
the mean and minimum number of distinct values per term, the same for the
whole term array of a value, and the expected candidates and matches of a
query of each kind. A column whose mean is below 2 for a family or for its
arrays breaks the leakage budget: in production, pgphi check fails unless the
pinned policy accepts that column's leakage (search_options.accept_leakage,
pinned with pgphi pins set --from-config). No value is printed.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "leakage", Conns: 2}, "", func(ctx context.Context, s *session, out *outcome) error {
				ring, err := loadKeys(ctx, s.Pool)
				if err != nil {
					return err
				}
				ls, err := engine.MeasureLeakage(ctx, s.Pool, ring, s.Plan, s.Cfg.IsProduction())
				if err != nil {
					return err
				}
				below := 0
				for i := range ls {
					ls[i].Accepted = s.Pins.AcceptLeakage[ls[i].Table+"."+ls[i].Column]
					if ls[i].Below() {
						below++
					}
				}
				out.Details["columns"] = fmt.Sprint(len(ls))
				out.Details["below_budget"] = fmt.Sprint(below)
				if asJSON {
					return json.NewEncoder(a.stdout).Encode(map[string]any{"plan_id": s.Plan.ID, "target": blindindex.TargetShare, "columns": ls})
				}
				printLeakage(a.stdout, ls)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"plan_id": ..., "target": 2, "columns": [...]}`)
	return cmd
}

// printLeakage renders measurements as tables, one per column.
func printLeakage(w io.Writer, ls []engine.ColumnLeakage) {
	for _, l := range ls {
		state := "terms in the table"
		if !l.Stored {
			state = "sizing the next apply records"
		}
		fmt.Fprintf(w, "%s.%s  (%s, sized by %s): %d rows, %d distinct values, %d distinct term arrays: %s values per array (min %d)\n",
			l.Table, l.Column, state, l.Sizing, l.Rows, l.Values, l.Arrays, engine.FormatShare(l.MeanValuesPerArray), l.MinValuesPerArray)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  FAMILY\tBITS\tVALUES\tTERMS\tVALUES/TERM\tMIN")
		for _, f := range l.Families {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%d\n", f.SubKind, f.Bits, f.Values, f.Terms, engine.FormatShare(f.MeanValuesPerTerm), f.MinValuesPerTerm)
		}
		tw.Flush()
		var qs []string
		for _, q := range l.Queries {
			qs = append(qs, fmt.Sprintf("%s %.1f candidates / %.1f matches", q.Kind, q.Candidates, q.Matches))
		}
		fmt.Fprintf(w, "  expected per query: %s\n", strings.Join(qs, "; "))
		switch {
		case l.Below() && l.Accepted != "":
			fmt.Fprintf(w, "  BELOW 2, accepted by the pinned policy: %s\n", l.Accepted)
		case l.Below():
			fmt.Fprintln(w, "  BELOW 2: fails pgphi check in production unless the pinned policy accepts it")
		}
		fmt.Fprintln(w)
	}
}
