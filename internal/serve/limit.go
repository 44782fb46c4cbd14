package serve

import (
	"sync"
	"time"
)

// limiter is a token bucket per client: rate requests per second on
// average, bursts of up to burst.
type limiter struct {
	rate  float64
	burst float64
	mu    sync.Mutex
	b     map[string]*bucket
	now   func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	if burst < 1 {
		burst = 1
	}
	return &limiter{rate: rate, burst: float64(burst), b: map[string]*bucket{}, now: time.Now}
}

// allow takes one token of name's bucket; false when it is empty. A rate
// of 0 or less means no limit.
func (l *limiter) allow(name string) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.b[name]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.b[name] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * l.rate
	if b.tokens > l.burst {
		b.tokens = l.burst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
