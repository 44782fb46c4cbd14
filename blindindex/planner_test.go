package blindindex

import (
	"math"
	"testing"
)

func TestBits(t *testing.T) {
	b := Bits(100000, 1)
	c := ExpectedCoincidences(100000, 1, b)
	if c < 2 || c > math.Sqrt(100000) {
		t.Fatalf("Bits(100000, 1) = %d: C = %v outside [2, sqrt(N)]", b, c)
	}
	if b != 15 {
		t.Fatalf("Bits(100000, 1) = %d, want 15 (C = 3.05)", b)
	}
	for _, rows := range []int64{32, 100, 1000, 12345, 1e6, 3e7, 1e9, 1e12} {
		for _, tpr := range []float64{0.5, 1, 2, 7.5, 40} {
			b := Bits(rows, tpr)
			c := ExpectedCoincidences(rows, tpr, b)
			if b < MinBits || b > MaxBits {
				t.Fatalf("Bits(%d, %v) = %d out of range", rows, tpr, b)
			}
			if c < 2 || c > math.Sqrt(float64(rows))*max(1, tpr) {
				t.Fatalf("Bits(%d, %v) = %d: C = %v", rows, tpr, b, c)
			}
			// Largest such bits: one more bit would give C < 2.
			if b < MaxBits && ExpectedCoincidences(rows, tpr, b+1) >= 2 {
				t.Fatalf("Bits(%d, %v) = %d is not the largest", rows, tpr, b)
			}
		}
	}
	if Bits(0, 1) != MinBits || Bits(10, 1) != MinBits || Bits(-5, 0) != MinBits {
		t.Fatal("tiny tables must clamp to MinBits")
	}
	if Bits(math.MaxInt64, 1e6) != MaxBits {
		t.Fatal("huge tables must clamp to MaxBits")
	}
}

func TestTermsPerRow(t *testing.T) {
	o := Defaults()
	for s, want := range map[SubKind]float64{
		SubExact: 1, SubPrefix4: 1, SubContains: 10, SubPhonetic: 4,
		SubPhoneE164: 1, SubPhoneLast4: 1, SubPhoneArea: 1, SubDate: 1, SubYear: 1, SubYearMonth: 1,
	} {
		if got := TermsPerRow(s, 12, o); got != want {
			t.Errorf("TermsPerRow(%s, 12) = %v, want %v", s, got, want)
		}
	}
	if TermsPerRow(SubContains, 1, o) != 1 || TermsPerRow(SubPhonetic, 2, o) != 2 {
		t.Error("short values")
	}
}
