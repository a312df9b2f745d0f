package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/ingotdev/ingot/mgmt"
)

// Pulled updates: with a Puller (an image with release keys) the
// appliance installs only releases it fetched and verified itself; the
// routes that take a root, boot files or a commit from the client refuse
// (signedOnly), since a token alone must not install a root.

// signedOnly answers mgmt.ErrSignedOnly and reports true when the agent has
// a Puller: what install routes call before they read anything.
func (a *Agent) signedOnly(w http.ResponseWriter, r *http.Request, what string) bool {
	if a.deps.Puller == nil {
		return false
	}
	// The body is never read: close rather than drain an upload.
	w.Header().Set("Connection", "close")
	a.fail(w, r, fmt.Errorf("%s: %w", what, mgmt.ErrSignedOnly))
	return true
}

// readPullBody decodes a JSON body of at most mgmt.MaxPullBodyBytes into
// v strictly: known fields, one value, nothing after it.
func readPullBody(r *http.Request, what string, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, mgmt.MaxPullBodyBytes+1))
	if err != nil {
		return fmt.Errorf("%s: reading the request: %w: %w", what, err, mgmt.ErrInvalid)
	}
	if len(body) > mgmt.MaxPullBodyBytes {
		return fmt.Errorf("%s: request over %d bytes: %w", what, mgmt.MaxPullBodyBytes, mgmt.ErrTooLarge)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: request body: %w: %w", what, err, mgmt.ErrInvalid)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: request body: data after the JSON object at offset %d: %w", what, dec.InputOffset(), mgmt.ErrInvalid)
	}
	return nil
}

func (a *Agent) pull(w http.ResponseWriter, r *http.Request) {
	if a.deps.Puller == nil {
		a.fail(w, r, unsupported("pull (the image has no release keys, update.keys)"))
		return
	}
	var req mgmt.PullRequest
	if err := readPullBody(r, "pull", &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := req.Validate(); err != nil {
		a.fail(w, r, err)
		return
	}
	a.logf("agent: pull %s requested by %s (allow downgrade %t, retry %t)", req.Ref, r.RemoteAddr, req.AllowDowngrade, req.Retry)
	res, err := a.deps.Puller.PullNow(r.Context(), req)
	if err != nil {
		a.fail(w, r, fmt.Errorf("pull %s: %w", req.Ref, err))
		return
	}
	a.logf("agent: pull %s: release %d (%s) committed to slot %s: %d bytes fetched, %d reused, %d resumed",
		req.Ref, res.Release.Release, res.Release.Digest, res.Slot, res.BytesFetched, res.BytesReused, res.BytesResumed)
	writeJSON(w, http.StatusOK, res)
}

func (a *Agent) registryAuth(w http.ResponseWriter, r *http.Request) {
	if a.deps.Puller == nil {
		a.fail(w, r, unsupported("registry auth (the image has no release keys, update.keys)"))
		return
	}
	var auth mgmt.RegistryAuth
	if err := readPullBody(r, "registry auth", &auth); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := auth.Validate(); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.deps.Puller.SetRegistryAuth(r.Context(), auth); err != nil {
		a.fail(w, r, fmt.Errorf("registry auth %s: %w", auth.Registry, err))
		return
	}
	// Never the credentials themselves.
	if auth.Remove() {
		a.logf("agent: registry auth: %s removed by %s", auth.Registry, r.RemoteAddr)
	} else {
		a.logf("agent: registry auth: %s stored for user %q by %s", auth.Registry, auth.Username, r.RemoteAddr)
	}
	w.WriteHeader(http.StatusNoContent)
}
