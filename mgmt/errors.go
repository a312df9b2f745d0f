package mgmt

import (
	"errors"
	"fmt"
	"net/http"
)

// Error kinds shared by both ends. The agent's dependencies wrap them
// (fmt.Errorf("...: %w", mgmt.ErrRejected)) to choose the HTTP status, and
// the client's *APIError unwraps to the one matching the status it got, so
// errors.Is works the same on both sides of the wire.
var (
	// ErrUnauthorized: the token was missing or wrong (401).
	ErrUnauthorized = errors.New("unauthorized: wrong or missing token")
	// ErrInvalid: the request itself is malformed (400).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such service or file (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the appliance is in a state that forbids the request,
	// such as an unconfirmed trial or another update in progress (409).
	ErrConflict = errors.New("conflict")
	// ErrLengthRequired: an update without Content-Length (411).
	ErrLengthRequired = errors.New("length required")
	// ErrTooLarge: an update larger than its partition (413).
	ErrTooLarge = errors.New("too large")
	// ErrRejected: an update whose content failed a check: hash, length,
	// magic or architecture (422). Nothing was switched.
	ErrRejected = errors.New("rejected")
	// ErrUnsupported: this agent does not implement the request (501).
	ErrUnsupported = errors.New("not supported by this agent")
)

var kindStatus = []struct {
	err  error
	code int
}{
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrInvalid, http.StatusBadRequest},
	{ErrNotFound, http.StatusNotFound},
	{ErrConflict, http.StatusConflict},
	{ErrLengthRequired, http.StatusLengthRequired},
	{ErrTooLarge, http.StatusRequestEntityTooLarge},
	{ErrRejected, http.StatusUnprocessableEntity},
	{ErrUnsupported, http.StatusNotImplemented},
}

// StatusCode is the HTTP status for err: that of the first error kind it
// wraps, else 500.
func StatusCode(err error) int {
	for _, k := range kindStatus {
		if errors.Is(err, k.err) {
			return k.code
		}
	}
	return http.StatusInternalServerError
}

// APIError is a non-2xx reply from the agent.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the agent's error body, or the status text without one.
	Message string
}

func (e *APIError) Error() string {
	if e.StatusCode == http.StatusUnauthorized {
		return ErrUnauthorized.Error()
	}
	return fmt.Sprintf("agent: %s (HTTP %d)", e.Message, e.StatusCode)
}

// Unwrap returns the error kind of the status, so that
// errors.Is(err, mgmt.ErrNotFound) works on the client.
func (e *APIError) Unwrap() error {
	for _, k := range kindStatus {
		if k.code == e.StatusCode {
			return k.err
		}
	}
	return nil
}
