package phonetic

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestGoldenNames checks the codes and keys of several hundred common
// surnames and given names against testdata/names.tsv, a reference table for
// other implementations of these keys.
func TestGoldenNames(t *testing.T) {
	f, err := os.Open("testdata/names.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 4 {
			t.Fatalf("bad line %q", line)
		}
		word, wantP, wantA, wantKeys := fields[0], fields[1], fields[2], fields[3]
		if p, a := DoubleMetaphone(word); p != wantP || a != wantA {
			t.Errorf("DoubleMetaphone(%q) = %q, %q; want %q, %q", word, p, a, wantP, wantA)
		}
		if k := strings.Join(Keys(word), " "); k != wantKeys {
			t.Errorf("Keys(%q) = %q; want %q", word, k, wantKeys)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 500 {
		t.Fatalf("only %d names in testdata/names.tsv", n)
	}
}
