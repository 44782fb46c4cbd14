package lint

import (
	"testing"

	"github.com/pgphi/pgphi/internal/migrate"
)

// Every rule has a file that breaks it and one that does not. The context
// protects public.patients.last_name (plaintext present) and
// public.patients.ssn (cleaned).
func TestEveryRuleFailsAndPasses(t *testing.T) {
	ctx := Context{
		Protected:  []Column{{Schema: "public", Table: "patients", Name: "last_name"}, {Schema: "public", Table: "patients", Name: "ssn", Cleaned: true}},
		Configured: map[string]bool{"public.patients.last_name": true, "public.patients.ssn": true},
	}
	cases := []struct{ rule, bad, good string }{
		{"require-concurrent-index-creation", "CREATE INDEX i ON patients (x);", "CREATE INDEX CONCURRENTLY i ON patients (x);"},
		{"require-concurrent-index-deletion", "DROP INDEX i;", "DROP INDEX CONCURRENTLY i;"},
		{"adding-required-field", "ALTER TABLE visits ADD COLUMN kind int NOT NULL;", "ALTER TABLE visits ADD COLUMN kind int NOT NULL DEFAULT 0;"},
		{"adding-field-with-default", "ALTER TABLE visits ADD COLUMN token uuid DEFAULT gen_random_uuid();", "ALTER TABLE visits ADD COLUMN flag boolean DEFAULT false;"},
		{"changing-column-type", "ALTER TABLE visits ALTER COLUMN kind TYPE bigint;", "ALTER TABLE visits ALTER COLUMN kind SET DEFAULT 1;"},
		{"constraint-missing-not-valid", "ALTER TABLE visits ADD CONSTRAINT k CHECK (kind > 0);", "ALTER TABLE visits ADD CONSTRAINT k CHECK (kind > 0) NOT VALID;"},
		{"adding-foreign-key-constraint", "ALTER TABLE visits ADD CONSTRAINT f FOREIGN KEY (p) REFERENCES patients (id) NOT VALID;", "ALTER TABLE visits VALIDATE CONSTRAINT f;"},
		{"disallowed-unique-constraint", "ALTER TABLE visits ADD CONSTRAINT u UNIQUE (code);", "ALTER TABLE visits ADD CONSTRAINT u UNIQUE USING INDEX visits_code_key;"},
		{"ban-drop-column", "ALTER TABLE visits DROP COLUMN note;", "ALTER TABLE visits ADD COLUMN note2 text;"},
		{"ban-drop-table", "DROP TABLE visits;", "DROP VIEW visit_view;"},
		{"renaming-column", "ALTER TABLE visits RENAME COLUMN a TO b;", "ALTER TABLE visits ALTER COLUMN a DROP DEFAULT;"},
		{"renaming-table", "ALTER TABLE visits RENAME TO appointments;", "ALTER TABLE visits SET (fillfactor = 90);"},
		{"require-lock-timeout", "SET lock_timeout = 0;", "SET lock_timeout = '5s';"},
		{"ban-concurrent-index-creation-in-transaction", "CREATE TABLE n (id int);\nCREATE INDEX CONCURRENTLY ni ON visits (kind);", "CREATE INDEX CONCURRENTLY ni ON visits (kind);"},
		{"prefer-robust-stmts", "CREATE INDEX CONCURRENTLY ON visits (kind);", "CREATE INDEX CONCURRENTLY IF NOT EXISTS vi ON visits (kind);"},
		{"phi-column-not-configured", "ALTER TABLE visits ADD COLUMN guardian_phone text;", "ALTER TABLE visits ADD COLUMN room int;"},
		{"phi-column-not-configured", "CREATE TABLE kin (id int, email text);", "CREATE TABLE rooms (id int, floor int);"},
		{"phi-column-not-configured", "COMMENT ON COLUMN visits.extra IS 'patient date of birth';", "COMMENT ON COLUMN visits.extra IS 'room number';"},
		{"phi-column-not-configured", "ALTER TABLE patients ADD COLUMN last_name_2 text;", "COMMENT ON COLUMN patients.last_name IS 'family name';"},
		{"protected-column-changed", "ALTER TABLE patients RENAME COLUMN last_name TO surname;", "ALTER TABLE patients RENAME COLUMN note TO remark;"},
		{"protected-column-changed", "ALTER TABLE patients ALTER COLUMN last_name TYPE varchar(80);", "ALTER TABLE patients ALTER COLUMN note TYPE varchar(80);"},
		{"protected-column-changed", "ALTER TABLE patients DROP COLUMN last_name;", "ALTER TABLE patients DROP COLUMN note;"},
		{"protected-column-changed", "UPDATE patients SET note = ssn;", "UPDATE patients SET note = 'x';"},
		{"protected-column-changed", "INSERT INTO archive (n) SELECT last_name FROM patients;", "INSERT INTO archive (n) SELECT id FROM patients;"},
		{"protected-column-changed", "UPDATE patients SET note = last_name;", "UPDATE patients SET note = upper(note) WHERE last_name IS NOT NULL;"},
		{"protected-column-changed", "UPDATE visits v SET who = p.last_name FROM patients p WHERE p.id = v.pid;", "UPDATE visits v SET who = p.id FROM patients p WHERE p.id = v.pid;"},
		{"protected-column-changed", "CREATE TABLE names AS SELECT last_name FROM patients;", "CREATE TABLE ids AS SELECT id FROM patients;"},
		{"phi-literal", "INSERT INTO patients (id, last_name) VALUES (1, 'Moreau');", "INSERT INTO patients (id, note) VALUES (1, 'x');"},
		{"phi-literal", "UPDATE patients SET last_name = 'Moreau' WHERE id = 1;", "UPDATE patients SET note = 'Moreau' WHERE id = 1;"},
		{"pgphi-objects", "UPDATE pgphi.flags SET enabled = false;", "UPDATE app.flags SET enabled = false;"},
		{"pgphi-objects", "SELECT pgphi.flag_set('require_encryption', false);", "INSERT INTO app.tools (name) VALUES ('pgphi');"},
		{"pgphi-objects", "SET session_replication_role = replica;", "SET statement_timeout = '5s';"},
		{"pgphi-objects", "ALTER TABLE patients DISABLE TRIGGER zz_pgphi_mark;", "ALTER TABLE patients DISABLE TRIGGER app_touch;"},
		{"pgphi-objects", "DROP TRIGGER zz_pgphi_mark ON patients;", "DROP TRIGGER app_touch ON patients;"},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.rule] = true
		for _, x := range []struct {
			sql  string
			want bool
		}{{c.bad, true}, {c.good, false}} {
			f, err := migrate.Parse("001_x.up.sql", []byte(x.sql))
			if err != nil {
				t.Fatalf("%s: %v", x.sql, err)
			}
			got := false
			for _, fd := range File(ctx, f) {
				if fd.Rule == c.rule {
					got = true
				}
			}
			if got != x.want {
				t.Errorf("%s on %q: found=%v, want %v", c.rule, x.sql, got, x.want)
			}
		}
	}
	for _, r := range Rules() {
		if !covered[r.Name()] {
			t.Errorf("rule %s has no failing and passing example", r.Name())
		}
	}
}

func TestNewTablesAreExemptAndIgnoresKeepTheirReason(t *testing.T) {
	f, err := migrate.Parse("002_x.up.sql", []byte("CREATE TABLE n (id int);\nCREATE INDEX ni ON n (id);\n-- pgphi:ignore ban-drop-table the table was never used\nDROP TABLE old_stuff;\n"))
	if err != nil {
		t.Fatal(err)
	}
	fs := File(Context{}, f)
	if len(fs) != 1 || fs[0].Rule != "ban-drop-table" || !fs[0].Ignored || fs[0].Reason != "the table was never used" || fs[0].Line != 4 {
		t.Fatalf("findings %+v", fs)
	}
	if Blocking(fs, true) {
		t.Fatal("an ignored error blocks")
	}
	// Outside production only the PHI rules block.
	f, _ = migrate.Parse("003_x.up.sql", []byte("DROP TABLE old_stuff;\n"))
	if fs := File(Context{}, f); !Blocking(fs, true) || Blocking(fs, false) {
		t.Fatalf("ban-drop-table: blocking in production %v, elsewhere %v", Blocking(fs, true), Blocking(fs, false))
	}
	f, _ = migrate.Parse("004_x.up.sql", []byte("UPDATE pgphi.flags SET enabled = false;\n"))
	if fs := File(Context{}, f); !Blocking(fs, false) {
		t.Fatal("a PHI rule does not block outside production")
	}
}

func TestParseErrorsNameFileLineColumn(t *testing.T) {
	_, err := migrate.Parse("003_bad.up.sql", []byte("SELECT 1;\nCREATE TABLE x (id int;\n"))
	if err == nil || err.Error() != "cannot parse migration: 003_bad.up.sql:2:23: syntax error at or near \";\"" {
		t.Fatalf("got %v", err)
	}
}
