package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/search"
)

func (a *app) searchCommand() *cobra.Command {
	values := map[blindindex.QueryKind]*string{}
	kinds := []struct {
		kind blindindex.QueryKind
		flag string
		help string
	}{
		{blindindex.QExact, "exact", "the whole value (normalized: case, accents, spacing)"},
		{blindindex.QPrefix, "prefix", "the first characters"},
		{blindindex.QContains, "contains", "a part of the value (at least the token size, 3 by default)"},
		{blindindex.QPhonetic, "phonetic", "sounds like (Double Metaphone with vowel class)"},
		{blindindex.QPhone, "phone", "a phone number in any common format"},
		{blindindex.QLast4, "last4", "the last four digits of a phone number"},
		{blindindex.QAreaCode, "area-code", "a phone area code, e.g. \"+1 415\""},
		{blindindex.QDate, "date", "a date, YYYY-MM-DD"},
		{blindindex.QYear, "year", "a year, YYYY"},
		{blindindex.QYearMonth, "year-month", "a month, YYYY-MM"},
	}
	var ageBetween, asJSON bool
	var reason string
	cmd := &cobra.Command{
		Use:   "search TABLE COLUMN (--exact|--prefix|--contains|--phonetic|--phone|--last4|--area-code|--date|--year|--year-month V | --age-between A B) --reason TEXT",
		Short: "Print the primary keys of rows whose encrypted column matches; exact results, no false positives",
		Long: `search finds candidates through the column's blind index, decrypts them and keeps
only true matches. It prints matching primary keys, one per line (composite keys
tab-separated), and nothing else on stdout; --json prints one JSON object.
The search value is never printed or logged.`,
		Args: cobra.RangeArgs(2, 4),
		RunE: func(cmd *cobra.Command, args []string) error {
			var q blindindex.Query
			n := 0
			for _, k := range kinds {
				if cmd.Flags().Changed(k.flag) {
					n++
					q = blindindex.Query{Kind: k.kind, Value: *values[k.kind]}
				}
			}
			if ageBetween {
				n++
				if len(args) != 4 {
					return withCode(ExitUsage, errors.New("usage: --age-between takes two ages: pgphi search TABLE COLUMN --age-between A B --reason TEXT"))
				}
				lo, err1 := strconv.Atoi(args[2])
				hi, err2 := strconv.Atoi(args[3])
				if err1 != nil || err2 != nil || lo < 0 || hi < lo {
					return withCode(ExitUsage, errors.New("usage: --age-between A B needs whole numbers with 0 <= A <= B"))
				}
				q = blindindex.Query{Kind: blindindex.QAgeBetween, MinAge: lo, MaxAge: hi}
			} else if len(args) != 2 {
				return withCode(ExitUsage, errors.New("usage: pgphi search TABLE COLUMN takes exactly two arguments"))
			}
			if n != 1 {
				return withCode(ExitUsage, errors.New("usage: give exactly one of --exact, --prefix, --contains, --phonetic, --phone, --last4, --area-code, --date, --year, --year-month, --age-between"))
			}
			if strings.TrimSpace(reason) == "" {
				return withCode(ExitUsage, errors.New("usage: --reason is required: say why you are looking up patient data (it is audited)"))
			}
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{command: "search", reason: true, conns: 4}, reason, func(ctx context.Context, s *session, out *outcome) error {
				ring, err := loadKeys(ctx, s.pool)
				if err != nil {
					return err
				}
				searcher, err := search.New(ctx, s.pool, ring, s.plan)
				if err != nil {
					return err
				}
				res, err := searcher.Find(ctx, args[0], args[1], q)
				if err != nil {
					if errors.Is(err, search.ErrNotSearchable) || isQueryError(err) {
						return withCode(ExitUsage, err)
					}
					return err
				}
				if asJSON {
					if res.Keys == nil {
						res.Keys = [][]string{}
					}
					return json.NewEncoder(a.stdout).Encode(res)
				}
				for _, k := range res.Keys {
					fmt.Fprintln(a.stdout, strings.Join(k, "\t"))
				}
				return nil
			})
		},
	}
	for _, k := range kinds {
		values[k.kind] = cmd.Flags().String(k.flag, "", k.help)
	}
	cmd.Flags().BoolVar(&ageBetween, "age-between", false, "age in whole years between A and B inclusive, computed today (date columns)")
	cmd.Flags().StringVar(&reason, "reason", "", "why this lookup is needed (required; audited)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// isQueryError tells a malformed query (a usage error) from a failure.
func isQueryError(err error) bool {
	return errors.Is(err, blindindex.ErrInvalidQuery) || errors.Is(err, blindindex.ErrNotConfigured)
}
