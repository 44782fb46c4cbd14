package policy

import (
	"strings"
	"testing"
)

// The backup gates are pins: the default maximum age is stored as nothing,
// so pins recorded before these fields existed keep their id; any change is
// a difference the YAML alone cannot make.
func TestBackupPins(t *testing.T) {
	const r1 = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	base := DefaultPins()
	day := base
	day.BackupMaxAge = "24h"
	if base.ID() == "" || base.ID() != day.ID() {
		t.Fatalf("the default maximum age changed the pins id: %s vs %s", base.ID(), day.ID())
	}
	if body, _, _ := base.Encode(); strings.Contains(string(body), "backup") {
		t.Fatalf("default pins encode a backup field: %s", body)
	}
	longer := base
	longer.BackupMaxAge = "48h"
	if longer.ID() == base.ID() || longer.MaxBackupAge().Hours() != 48 {
		t.Fatal("a 48h maximum age is not a different pin")
	}
	if d := Diff(base, longer); len(d) != 1 || !strings.Contains(d[0], "backup.max_age: pinned 24h0m0s, the configuration says 48h0m0s") {
		t.Fatalf("Diff = %q", d)
	}
	rec := base
	rec.BackupRecipients = []string{r1}
	if d := Diff(base, rec); len(d) != 1 || !strings.Contains(d[0], "backup.age_recipients") {
		t.Fatalf("Diff = %q", d)
	}
	bad := base
	bad.BackupRecipients = []string{"age1nope"}
	if _, _, err := bad.Encode(); err == nil {
		t.Fatal("an invalid recipient was accepted")
	}
	bad = base
	bad.BackupMaxAge = "-1h"
	if _, _, err := bad.Encode(); err == nil {
		t.Fatal("a negative maximum age was accepted")
	}
}
