package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/pgphi/pgphi/internal/alert"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/metrics"
	"github.com/pgphi/pgphi/internal/progress"
)

// setLogFormat applies --log-format: text (lines, a bar on a terminal) or
// json (one log/slog JSON record per line on stderr, for log shippers).
// The json records carry the same value-free events as the text lines:
// every line pgphi prints on stderr becomes a record's msg, progress and
// alerts carry their numbers as attributes.
func (a *app) setLogFormat() error {
	switch a.logFormat {
	case "", "text":
		return nil
	case "json":
		a.jsonLog = slog.New(slog.NewJSONHandler(a.stderr, nil))
		a.stderr = &slogLines{log: a.jsonLog}
		return nil
	}
	return withCode(ExitUsage, errUsagef("--log-format is text or json"))
}

// slogLines turns every line written to it into one Info record.
type slogLines struct {
	log *slog.Logger
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *slogLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			// An incomplete line waits for its end.
			w.buf.Reset()
			w.buf.WriteString(line)
			return len(p), nil
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		w.log.Info(strings.TrimSpace(line))
	}
}

var _ io.Writer = (*slogLines)(nil)

// progressFactory is the progress display of a command: a bar or plain
// lines, or structured records with --log-format json; status adds the
// throttle's and the alerts' state to each line.
func (a *app) progressFactory(status func() string) engine.ProgressFactory {
	return func(label string, total int64, poll func(context.Context) (int64, error)) interface{ Stop() } {
		return progress.Start(a.stderr, label, total, poll, progress.Options{StatusSuffix: status, Log: a.jsonLog})
	}
}

// watchAlerts shows every alert the command raises: on stderr (a line, or
// a warning record with --log-format json) and in the metrics. The audit
// trail and the on_alert hook are the compliance wrapper's.
func (a *app) watchAlerts(mon *alert.Monitor, m *metrics.Recorder) {
	mon.OnFire(func(_ context.Context, al alert.Alert) {
		m.Alert(al)
		if a.jsonLog != nil {
			attrs := []any{"threshold", string(al.Threshold), "measured", al.Measured, "limit", al.Limit, "unit", al.Unit}
			if al.Table != "" {
				attrs = append(attrs, "table", al.Table)
			}
			a.jsonLog.Warn("alert", attrs...)
			return
		}
		fmt.Fprintln(a.stderr, al.String())
	})
}

// statusLine joins the throttle's state and the alerts fired, for the
// progress line.
func statusLine(parts ...func() string) func() string {
	return func() string {
		var out []string
		for _, p := range parts {
			if s := p(); s != "" {
				out = append(out, s)
			}
		}
		return strings.Join(out, ", ")
	}
}
