package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackupSection(t *testing.T) {
	const r = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	cfg, err := Parse("pgphi.yaml", []byte("version: 1\nbackup: { max_age: 36h, age_recipients: ["+r+"] }\n"+keysTables))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backup.MaxAge != 36*time.Hour || !slices.Equal(cfg.Backup.AgeRecipients, []string{r}) {
		t.Fatalf("Backup = %+v", cfg.Backup)
	}
	if cfg, err := Parse("pgphi.yaml", []byte("version: 1\n"+keysTables)); err != nil || cfg.Backup.MaxAge != 0 {
		t.Fatalf("no backup section: %+v, %v", cfg.Backup, err)
	}
	for _, c := range []struct{ yaml, want string }{
		{"backup: { max_age: -1h }", "backup.max_age"},
		{"backup: { max_age: soon }", "backup.max_age"},
		{"backup: { age_recipients: [ssh-ed25519 AAAA] }", "not an age X25519 recipient"},
		{"backup: { retention: 7d }", "retention"},
	} {
		_, err := Parse("pgphi.yaml", []byte("version: 1\n"+c.yaml+"\n"+keysTables))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.yaml, err, c.want)
		}
	}
}
