package report

import (
	_ "embed"
	"html/template"
	"io"
	"regexp"
	"time"
)

// The HTML report is a self-contained page: inline stylesheet with a print
// layout, no script, no external resource (its Content-Security-Policy
// forbids loading any), every fact escaped by html/template.
//
//go:embed report.html.tmpl
var htmlSource string

var backticks = regexp.MustCompile("`([^`]+)`")

var htmlFuncs = template.FuncMap{
	"ts": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	// code shows `command` spans as code, after escaping everything.
	"code": func(s string) template.HTML {
		return template.HTML(backticks.ReplaceAllString(template.HTMLEscapeString(s), "<code>$1</code>"))
	},
	"time": func(t *time.Time) string {
		if t == nil {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
}

var htmlTemplate = template.Must(template.New("report").Funcs(htmlFuncs).Parse(htmlSource))

func renderHTML(w io.Writer, f *Facts) error {
	items := f.Assess()
	unmet := 0
	for _, i := range items {
		if !i.Met {
			unmet++
		}
	}
	return htmlTemplate.Execute(w, struct {
		F        *Facts
		Items    []Item
		Approved bool
		Unmet    int
		Verdict  string
	}{f, items, unmet == 0, unmet, f.Verdict()})
}
