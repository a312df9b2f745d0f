package agent

import (
	"fmt"
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

func (a *Agent) pull(w http.ResponseWriter, r *http.Request) {
	if a.deps.Puller == nil {
		a.fail(w, r, unsupported("pull (the image has no release keys, update.keys)"))
		return
	}
	var req mgmt.PullRequest
	if err := readJSONBody(r, "pull", mgmt.MaxPullBodyBytes, &req); err != nil {
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
	if err := readJSONBody(r, "registry auth", mgmt.MaxPullBodyBytes, &auth); err != nil {
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
