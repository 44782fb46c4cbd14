package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/config"
)

const configTemplate = `# pgphi.yaml — which columns hold PHI, and how they are searched.
# Column types come from the database catalog. Docs: README.md, docs/FORMAT.md.
version: 1
environment: development        # production enables stricter policy
# database:
#   url: postgres://user@host/db  # else $DATABASE_URL, else PG* variables
# encryption:
#   column_suffix: _encrypted     # ciphertext column = <column><suffix>
# apply:
#   batch_size: 2000
#   workers: 2
#   lock_timeout: 2s
tables:
%s`

const exampleTables = `  patient:                      # or schema.table
    # primary_key: uid            # default: the table's primary key
    columns:
      first_name: { class: pii, search: [exact, prefix, phonetic] }
      date_of_birth: { class: pii, search: [date] }
`

func (a *app) initCommand() *cobra.Command {
	var suggest, force bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a starting pgphi.yaml (with --suggest: PHI candidates from the catalog)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := config.Locate(a.configFlag)
			if _, err := os.Stat(path); err == nil && !force {
				return withCode(ExitUsage, fmt.Errorf("%s already exists; edit it, or pass --force to overwrite", path))
			}
			tables := exampleTables
			if suggest {
				// Reading the catalog is reading the database: role check
				// and audit like every other command (there is no config
				// yet: the pinned policy decides).
				err := a.guarded(cmd.Context(), guardSpec{Command: "init", Conns: 2, NoPlan: true, NoConfig: true}, "init --suggest", func(ctx context.Context, s *session, out *outcome) error {
					var err error
					tables, err = suggestTables(ctx, s.Pool)
					return err
				})
				if err != nil {
					return err
				}
				if tables == "" {
					return withCode(ExitFailed, errors.New("no PHI candidates found by column name; write the tables section by hand"))
				}
			}
			body := fmt.Sprintf(configTemplate, tables)
			if _, err := config.Parse(path, []byte(body)); err != nil {
				return fmt.Errorf("generated config does not parse (please report): %w", err)
			}
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s; review the columns, then run `pgphi plan`\n", path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&suggest, "suggest", false, "propose PHI columns found in the database catalog by name and type")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}

// candidate rules: a column name pattern, its class and the searches that suit it.
var candidates = []struct {
	re     *regexp.Regexp
	class  string
	search string
}{
	{regexp.MustCompile(`(^|_)(first|given|middle|last|family|sur|full|maiden)_?name$|^name$`), "pii", "[exact, prefix, phonetic]"},
	{regexp.MustCompile(`phone|mobile|(^|_)tel(ephone)?($|_)|(^|_)fax($|_)`), "pii", "[phone]"},
	{regexp.MustCompile(`e_?mail`), "pii", "[exact]"},
	{regexp.MustCompile(`(^|_)(dob|date_of_birth|birth_?date|birthday)$`), "pii", "[date]"},
	{regexp.MustCompile(`ssn|social_security|national_id|passport|(^|_)mrn($|_)|medical_record|insurance_(no|number|id)|identification|^value$`), "pii", "[exact]"},
	{regexp.MustCompile(`address|street|(^|_)city$|postal|zip_?code`), "pii", ""},
	{regexp.MustCompile(`result|diagnos|symptom|clinical|vital|treatment|medication|allerg|(^|_)notes?$|indication|(^|_)before$|(^|_)after$|other_context|comment`), "phi", ""},
}

func suggestTables(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	rows, err := pool.Query(ctx, `
		SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgphi') AND n.nspname NOT LIKE 'pg_toast%'
		  AND a.attname NOT LIKE 'pgphi\_%' AND a.attname NOT LIKE '%\_encrypted'
		  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey))
		ORDER BY n.nspname, c.relname, a.attnum`)
	if err != nil {
		return "", fmt.Errorf("reading catalog: %w", err)
	}
	defer rows.Close()
	var b strings.Builder
	lastTable := ""
	for rows.Next() {
		var schema, table, column, typ string
		if err := rows.Scan(&schema, &table, &column, &typ); err != nil {
			return "", err
		}
		if !suggestableType(typ) || idColumn.MatchString(column) {
			continue
		}
		for _, c := range candidates {
			if !c.re.MatchString(strings.ToLower(column)) {
				continue
			}
			name := table
			if schema != "public" {
				name = schema + "." + table
			}
			if name != lastTable {
				fmt.Fprintf(&b, "  %s:\n    columns:\n", yamlKey(name))
				lastTable = name
			}
			search := ""
			if c.search != "" && !(c.search == "[date]" && !strings.HasPrefix(typ, "date")) {
				search = ", search: " + c.search
			}
			fmt.Fprintf(&b, "      %s: { class: %s%s }   # %s\n", yamlKey(column), c.class, search, typ)
			break
		}
	}
	return b.String(), rows.Err()
}

func suggestableType(t string) bool {
	for _, p := range []string{"text", "character", "varchar", "date", "timestamp", "json", "numeric", "integer", "bigint"} {
		if strings.HasPrefix(t, p) {
			return !strings.HasSuffix(t, "[]")
		}
	}
	return false
}

// idColumn matches references to other rows (patient_uid, result_id): keys, not PHI.
var idColumn = regexp.MustCompile(`(^|_)u?id$`)

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func yamlKey(s string) string {
	if plainKey.MatchString(s) {
		return s
	}
	return fmt.Sprintf("%q", s)
}
