package audit

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCanonicalStringEscaping(t *testing.T) {
	got := string(appendString(nil, "a\"b\\c\b\t\n\f\r\x01\x1f\x7f<>&é\u2028😀"))
	want := `"a\"b\\c\b\t\n\f\r\u0001\u001f` + "\x7f<>&é\u2028😀" + `"`
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// TestCanonicalIsSortedJSON checks the hand-written encoder against a
// generic one: keys sorted at every level, no whitespace, all keys present.
func TestCanonicalIsSortedJSON(t *testing.T) {
	for _, r := range append(formatExamples(), Record{Seq: 7, Event: EventFailure, Command: "x", Prev: ZeroHash}) {
		r.normalize()
		enc := r.CanonicalJSON()
		var generic map[string]any
		if err := json.Unmarshal(enc, &generic); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range generic {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, fieldNames) {
			t.Fatalf("keys %v, want %v", keys, fieldNames)
		}
		// encoding/json sorts map keys; with HTML escaping off and no
		// special characters in the examples it must agree byte for byte.
		var b strings.Builder
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		if err := e.Encode(generic); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSuffix(b.String(), "\n") != string(enc) {
			t.Fatalf("not canonical:\n%s\n%s", enc, b.String())
		}
	}
}

func TestParseRecordRoundTrip(t *testing.T) {
	for _, r := range formatExamples() {
		got, err := ParseRecord(r.CanonicalJSON())
		if err != nil {
			t.Fatal(err)
		}
		if d := diffFields(got, r); len(d) > 0 {
			t.Fatalf("round trip differs in %v", d)
		}
		if got.ComputeHash() != r.Hash {
			t.Fatal("hash changed in round trip")
		}
		var viaJSON Record
		if err := json.Unmarshal(r.CanonicalJSON(), &viaJSON); err != nil || viaJSON.Hash != r.Hash {
			t.Fatalf("json.Unmarshal: %v", err)
		}
	}
}

func TestParseRecordStrict(t *testing.T) {
	good := string(formatExamples()[0].CanonicalJSON())
	cases := map[string]string{
		"extra key":        strings.Replace(good, `"seq":1`, `"seq":1,"patient":"Jane"`, 1),
		"missing key":      strings.Replace(good, `"rows":0,`, ``, 1),
		"null":             strings.Replace(good, `"tables":["patient"]`, `"tables":null`, 1),
		"actor extra":      strings.Replace(good, `"os_user":"rdupont"`, `"os_user":"rdupont","ssn":"x"`, 1),
		"wrong type":       strings.Replace(good, `"rows":0`, `"rows":"0"`, 1),
		"fraction":         strings.Replace(good, `"rows":0`, `"rows":0.5`, 1),
		"time form":        strings.Replace(good, `.589793Z`, `.589793+00:00`, 1),
		"short time":       strings.Replace(good, `.589793Z`, `.5897930Z`, 1),
		"not json":         good[:len(good)/2],
		"details key case": strings.Replace(good, `"approvals"`, `"Approvals"`, 1),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRecord([]byte(in))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, leak := range []string{"Jane", "rdupont", "patient", "SEC-42"} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error %q quotes content", err)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base := Record{Event: EventStart, Command: "apply", Time: time.Now()}
	bad := map[string]func(r *Record){
		"event":      func(r *Record) { r.Event = "begin" },
		"command":    func(r *Record) { r.Command = "" },
		"nul":        func(r *Record) { r.Reason = "a\x00b" },
		"utf8":       func(r *Record) { r.Reason = "a\xffb" },
		"detail key": func(r *Record) { r.Details = map[string]string{"Jane Doe": "x"} },
		"rows":       func(r *Record) { r.Rows = 1 << 60 },
		"size":       func(r *Record) { r.Reason = strings.Repeat("x", MaxRecordSize) },
		"table":      func(r *Record) { r.Tables = []string{"a\x00"} },
	}
	for name, f := range bad {
		r := base
		f(&r)
		if err := r.validate(); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: got %v", name, err)
		} else if strings.Contains(err.Error(), "Jane") {
			t.Errorf("%s: error quotes content: %v", name, err)
		}
	}
	if err := base.validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParsePublicKeyAndFingerprint(t *testing.T) {
	// Generated with ssh-keygen -t ed25519; `ssh-keygen -lf` printed the fingerprint.
	const line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPzM9rbJcyqnCp8P4raYZ/x71YQSQR09cEyvw38MFImq test"
	const fp = "SHA256:SlICISJ+JFixQ3bM3uKn8WizfmpRI/r1KfYLAWeuHog"
	pub, err := ParsePublicKey(line)
	if err != nil {
		t.Fatal(err)
	}
	if got := Fingerprint(pub); got != fp {
		t.Fatalf("fingerprint %s, want %s", got, fp)
	}
	for _, bad := range []string{"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "ssh-ed25519 !!!", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPzM9rbJ"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if Fingerprint(ed25519.PublicKey{1, 2}) != "" {
		t.Fatal("fingerprint of a malformed key")
	}
}

func TestLastLine(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 20000)
	for name, tc := range map[string]struct {
		content, want string
		err           bool
	}{
		"empty":     {"", "", false},
		"one":       {"abc\n", "abc", false},
		"two":       {"abc\ndef\n", "def", false},
		"long last": {"abc\n" + long + "\n", long, false},
		"long only": {long + "\n", long, false},
		"cut":       {"abc\nde", "", true},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := lastLine(f)
		f.Close()
		if (err != nil) != tc.err || string(got) != tc.want {
			t.Errorf("%s: got %d bytes, %v", name, len(got), err)
		}
	}
}

func TestLocalActorAndRunID(t *testing.T) {
	a := LocalActor("Jo")
	if a.Name != "Jo" || a.Host == "" || a.DBRole != "" {
		t.Fatalf("%+v", a)
	}
	if id := NewRunID(); len(id) != 32 || id == NewRunID() {
		t.Fatal("run ids")
	}
}
