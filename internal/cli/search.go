package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/search"
)

// maxSearchValue bounds a search value read from stdin.
const maxSearchValue = 64 << 10

// searchKind is one kind of query and its flag.
type searchKind struct {
	kind blindindex.QueryKind
	flag string
	help string
}

// searchStdin is where `-` search values are read from (a variable for tests).
var searchStdin io.Reader = os.Stdin

func (a *app) searchCommand() *cobra.Command {
	values := map[blindindex.QueryKind]*string{}
	kinds := []searchKind{
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
	var reason, kindFlag, valueFlag string
	cmd := &cobra.Command{
		Use:   "search TABLE COLUMN (--exact|--prefix|--contains|--phonetic|--phone|--last4|--area-code|--date|--year|--year-month V | --kind KIND --value - | --age-between A B) --reason TEXT",
		Short: "Print the primary keys of rows whose encrypted column matches; exact results, no false positives",
		Long: `search finds candidates through the column's blind index, decrypts them and keeps
only true matches. It prints matching primary keys, one per line (composite keys
tab-separated), and nothing else on stdout; --json prints one JSON object.
The search value is never printed or logged.

Give the value as "-" (--value - with --kind KIND, or e.g. --exact -) to read it
from stdin, one line, or from a prompt that does not echo when stdin is a
terminal. A value written on the command line is visible to other processes
(ps, /proc/PID/cmdline) and kept in shell history: it still works, with a
warning.

The audit record of a search says the table, column, kind of query, reason and
the number of keys returned; never the value or the keys.`,
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
			if cmd.Flags().Changed("kind") || cmd.Flags().Changed("value") {
				i := slices.IndexFunc(kinds, func(k searchKind) bool { return k.flag == kindFlag })
				if i < 0 || !cmd.Flags().Changed("value") {
					return withCode(ExitUsage, errors.New("usage: --value V (or --value - to read it from stdin) goes with --kind exact|prefix|contains|phonetic|phone|last4|area-code|date|year|year-month"))
				}
				n++
				q = blindindex.Query{Kind: kinds[i].kind, Value: valueFlag}
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
				return withCode(ExitUsage, errors.New("usage: give exactly one of --exact, --prefix, --contains, --phonetic, --phone, --last4, --area-code, --date, --year, --year-month, --kind with --value, --age-between"))
			}
			if strings.TrimSpace(reason) == "" {
				return withCode(ExitUsage, errors.New("usage: --reason is required: say why you are looking up patient data (it is audited)"))
			}
			source := "none"
			if q.Kind != blindindex.QAgeBetween {
				if q.Value == "-" {
					v, err := readSearchValue(a.stderr)
					if err != nil {
						return withCode(ExitUsage, err)
					}
					q.Value, source = v, "stdin"
				} else {
					source = "argument"
					if onCommandLine(q.Value) {
						fmt.Fprintln(a.stderr, "pgphi: warning: the search value is on the command line, where other processes (ps, /proc/PID/cmdline) and the shell history see it; give it as - to read it from stdin")
					}
				}
			}
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "search", Reason: true, Conns: 4}, reason, func(ctx context.Context, s *session, out *outcome) error {
				// What was searched, for the audit record: never the
				// value, nor the keys found.
				out.Details["table"], out.Details["column"] = args[0], args[1]
				out.Details["kind"], out.Details["value_source"] = string(q.Kind), source
				ring, err := loadKeys(ctx, s.Pool)
				if err != nil {
					return err
				}
				searcher, err := search.New(ctx, s.Pool, ring, s.Plan)
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
				out.Details["table"], out.Details["column"] = res.Table, res.Column
				out.Rows = int64(len(res.Keys))
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
		values[k.kind] = cmd.Flags().String(k.flag, "", k.help+` ("-": read from stdin)`)
	}
	cmd.Flags().StringVar(&kindFlag, "kind", "", "the kind of query for --value: exact, prefix, contains, phonetic, phone, last4, area-code, date, year, year-month")
	cmd.Flags().StringVar(&valueFlag, "value", "", `the search value; "-" reads it from stdin (a no-echo prompt on a terminal)`)
	cmd.Flags().BoolVar(&ageBetween, "age-between", false, "age in whole years between A and B inclusive, computed today (date columns)")
	cmd.Flags().StringVar(&reason, "reason", "", "why this lookup is needed (required; audited)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// readSearchValue reads the search value: with a no-echo prompt on stderr
// when stdin is a terminal, else the first line of stdin. Errors never
// contain the value.
func readSearchValue(prompt io.Writer) (string, error) {
	if f, ok := searchStdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "search value (not shown): ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("usage: reading the search value from the terminal: %w", err)
		}
		if len(b) == 0 {
			return "", errors.New("usage: empty search value")
		}
		return string(b), nil
	}
	line, err := bufio.NewReaderSize(io.LimitReader(searchStdin, maxSearchValue+1), 4096).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("usage: reading the search value from stdin: %w", err)
	}
	if len(line) > maxSearchValue {
		return "", fmt.Errorf("usage: the search value on stdin is longer than %d bytes", maxSearchValue)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("usage: --value - found no search value on stdin (one line)")
	}
	return line, nil
}

// onCommandLine reports whether v is one of this process's own arguments,
// which every process on the machine can read in /proc/PID/cmdline.
// (The demo passes values in-process; they are not on its command line.)
func onCommandLine(v string) bool {
	for _, arg := range os.Args[1:] {
		if arg == v || strings.HasSuffix(arg, "="+v) {
			return true
		}
	}
	return false
}

// isQueryError tells a malformed query (a usage error) from a failure.
func isQueryError(err error) bool {
	return errors.Is(err, blindindex.ErrInvalidQuery) || errors.Is(err, blindindex.ErrNotConfigured)
}
