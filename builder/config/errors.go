package config

import (
	"fmt"
	"strings"
)

// Error is one problem in a config file. Its message reads
// "FILE:LINE:COL: FIELD: MSG", e.g.
// `ingot.yaml:7:14: services[1].restart: "sometimes" is not one of always, on-failure, never`.
type Error struct {
	Pos
	// Field is the path of the offending field ("services[1].restart");
	// empty for errors about the file as a whole.
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.String())
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList holds every problem found in one file, in file order. Parse
// returns an ErrorList (never empty) when the config is invalid; use
// errors.As to reach the individual errors.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap exposes the individual errors to errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// maxErrors bounds how many problems one parse reports; a badly broken
// file would otherwise bury the first (usually root) cause.
const maxErrors = 20

func fieldPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func indexPath(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}
