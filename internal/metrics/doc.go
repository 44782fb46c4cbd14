// Package metrics exposes what a long pgphi command is doing in Prometheus
// terms, over HTTP in the text exposition format, for the on-call engineer
// watching a six-hour apply: rows encrypted, verified, restored and failed,
// batches, rate and ETA, throttle state and limit, canary latency against
// its baseline, replication lag, lock retries, errors by class,
// verification mismatches, audit records written, and pgphi_up/pgphi_info.
//
// It owns the metric names (Names lists every one; the alerting rules in
// deploy/prometheus are tested against it), the registry of one process and
// the HTTP listener behind --metrics-addr.
//
// Guarantee: no metric name, label or help text ever holds a value of a
// protected column, a key column's value or a search term. Labels take only
//   - fixed words chosen here (phase, result, event, state),
//   - the qualified names of the plan's tables (SetPlan registers them;
//     any other table name is exported as "other"),
//   - error classes shaped like "SQLSTATE 55P03" or a short lower-case
//     phrase (anything else becomes "error"),
//   - the plan id (plan-HEX) and pgphi's version.
//
// Measurements are counts, durations and rates. The Recorder's methods are
// safe on a nil *Recorder (they do nothing), so callers need no checks.
package metrics
