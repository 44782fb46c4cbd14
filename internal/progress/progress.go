// Package progress shows how long work is going: rows done, rows per second
// and the time left. On a terminal it redraws one bar line; otherwise it
// prints a plain line now and then, so that logs stay readable.
package progress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Options tune a Display.
type Options struct {
	Interval     time.Duration // how often to poll; default 500ms
	PlainEvery   time.Duration // how often to print a plain line when not a terminal; default 10s
	ForceTTY     *bool         // override terminal detection (tests)
	Now          func() time.Time
	StatusSuffix func() string // optional extra text, e.g. throttle state
	// Log, when set, receives each plain line as a structured record
	// instead (msg "progress", then "progress done"): label, rows done,
	// total, rate, ETA and status as attributes, for log shippers. No bar
	// is drawn.
	Log *slog.Logger
}

// Display polls a counter and renders progress until Stop.
type Display struct {
	w       io.Writer
	label   string
	total   int64
	poll    func(context.Context) (int64, error)
	opts    Options
	tty     bool
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
	start   time.Time
	samples []sample
	last    int64
}

type sample struct {
	at   time.Time
	rows int64
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Start begins displaying the progress of label towards total rows.
func Start(w io.Writer, label string, total int64, poll func(context.Context) (int64, error), opts Options) *Display {
	if opts.Interval <= 0 {
		opts.Interval = 500 * time.Millisecond
	}
	if opts.PlainEvery <= 0 {
		opts.PlainEvery = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := &Display{w: w, label: label, total: total, poll: poll, opts: opts, done: make(chan struct{})}
	d.tty = IsTerminal(w)
	if opts.ForceTTY != nil {
		d.tty = *opts.ForceTTY
	}
	if opts.Log != nil {
		d.tty = false
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.start = opts.Now()
	go d.loop(ctx)
	return d
}

func (d *Display) loop(ctx context.Context) {
	defer close(d.done)
	tick := time.NewTicker(d.opts.Interval)
	defer tick.Stop()
	lastPlain := d.start
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n, err := d.poll(ctx)
			if err != nil {
				continue
			}
			d.observe(n)
			now := d.opts.Now()
			switch {
			case d.tty:
				fmt.Fprintf(d.w, "\r\033[K%s", d.Line())
			case now.Sub(lastPlain) >= d.opts.PlainEvery:
				if d.opts.Log != nil {
					d.record("progress")
				} else {
					fmt.Fprintln(d.w, d.Line())
				}
				lastPlain = now
			}
		}
	}
}

func (d *Display) observe(n int64) {
	now := d.opts.Now()
	d.last = n
	d.samples = append(d.samples, sample{now, n})
	// Rate over the last 10 seconds: recent enough to follow throttling,
	// long enough to be steady.
	for len(d.samples) > 2 && now.Sub(d.samples[0].at) > 10*time.Second {
		d.samples = d.samples[1:]
	}
}

// Rate is rows per second over the recent window.
func (d *Display) Rate() float64 {
	if len(d.samples) < 2 {
		el := d.opts.Now().Sub(d.start).Seconds()
		if el <= 0 {
			return 0
		}
		return float64(d.last) / el
	}
	a, b := d.samples[0], d.samples[len(d.samples)-1]
	s := b.at.Sub(a.at).Seconds()
	if s <= 0 {
		return 0
	}
	return float64(b.rows-a.rows) / s
}

// Line renders the current state as one line.
func (d *Display) Line() string {
	rate := d.Rate()
	var b strings.Builder
	b.WriteString(d.label)
	b.WriteString(": ")
	if d.total > 0 {
		frac := min(float64(d.last)/float64(d.total), 1)
		if d.tty {
			const width = 24
			filled := int(frac * width)
			b.WriteString("[" + strings.Repeat("=", filled) + strings.Repeat(" ", width-filled) + "] ")
		}
		fmt.Fprintf(&b, "%5.1f%% %d/%d rows", frac*100, d.last, d.total)
	} else {
		fmt.Fprintf(&b, "%d rows", d.last)
	}
	fmt.Fprintf(&b, ", %.0f rows/s", rate)
	if d.total > d.last && rate > 0 {
		eta := time.Duration(float64(d.total-d.last)/rate) * time.Second
		fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
	}
	if d.opts.StatusSuffix != nil {
		if s := d.opts.StatusSuffix(); s != "" {
			b.WriteString(", " + s)
		}
	}
	return b.String()
}

// record logs the state as a structured record: the same facts as Line.
func (d *Display) record(msg string) {
	rate := d.Rate()
	eta := -1.0
	if d.total > d.last && rate > 0 {
		eta = float64(d.total-d.last) / rate
	} else if d.total > 0 && d.last >= d.total {
		eta = 0
	}
	attrs := []any{"label", d.label, "rows_done", d.last, "rows_total", d.total, "rows_per_second", rate, "eta_seconds", eta}
	if d.opts.StatusSuffix != nil {
		if s := d.opts.StatusSuffix(); s != "" {
			attrs = append(attrs, "status", s)
		}
	}
	d.opts.Log.Info(msg, attrs...)
}

// Stop polls once more, prints a final line and ends the display.
func (d *Display) Stop() {
	d.once.Do(func() {
		d.cancel()
		<-d.done
		if n, err := d.poll(context.Background()); err == nil {
			d.observe(n)
		}
		el := d.opts.Now().Sub(d.start)
		avg := 0.0
		if el > 0 {
			avg = float64(d.last) / el.Seconds()
		}
		if d.tty {
			fmt.Fprint(d.w, "\r\033[K")
		}
		if d.opts.Log != nil {
			d.opts.Log.Info("progress done", "label", d.label, "rows_done", d.last, "seconds", el.Seconds(), "rows_per_second", avg)
			return
		}
		fmt.Fprintf(d.w, "%s: %d rows in %s (%.0f rows/s)\n", d.label, d.last, el.Round(time.Millisecond), avg)
	})
}
