package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The boot partition's layout.LastUpdateFile records the last update and
// how it ended. It is informational only: no loader reads it, nothing is
// decided from it, and a record that is missing, oversized, torn or
// otherwise undecodable reads as no record. Writing it is the last step
// of each transition, after slot.json, and its failure never fails the
// transition: the callers log it. A power cut between the slot.json write
// and the record's leaves a pending record that ResolveLastUpdate decides
// from slot.json at the next boot.

// maxRecordReasonBytes caps a reason written into the record (slot.json
// caps its own at 256 bytes; this leaves room for a prefix).
const maxRecordReasonBytes = 512

// ReadLastUpdate returns the record in bootDir, or nil when there is none
// that decodes.
func ReadLastUpdate(bootDir string) *mgmt.LastUpdate {
	f, err := os.Open(filepath.Join(bootDir, layout.LastUpdateFile))
	if err != nil {
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, layout.MaxLastUpdateBytes+1))
	if err != nil || len(data) > layout.MaxLastUpdateBytes || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	r, err := ParseLastUpdate(data)
	if err != nil {
		return nil
	}
	return &r
}

// ParseLastUpdate decodes a record strictly: one JSON object with known
// fields only, valid slots, a known outcome, a start time, and a finish
// time exactly when the outcome is decided.
func ParseLastUpdate(data []byte) (mgmt.LastUpdate, error) {
	var r mgmt.LastUpdate
	if len(data) > layout.MaxLastUpdateBytes {
		return r, fmt.Errorf("update: %s: %d bytes, more than %d", layout.LastUpdateFile, len(data), layout.MaxLastUpdateBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return mgmt.LastUpdate{}, fmt.Errorf("update: %s: %w", layout.LastUpdateFile, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return mgmt.LastUpdate{}, fmt.Errorf("update: %s: data after the record", layout.LastUpdateFile)
	}
	if err := checkLastUpdate(r); err != nil {
		return mgmt.LastUpdate{}, fmt.Errorf("update: %s: %w", layout.LastUpdateFile, err)
	}
	return r, nil
}

func checkLastUpdate(r mgmt.LastUpdate) error {
	switch {
	case !slot.Name(r.Slot).Valid():
		return fmt.Errorf("slot %q is not a or b", r.Slot)
	case !slot.Name(r.FromSlot).Valid():
		return fmt.Errorf("from_slot %q is not a or b", r.FromSlot)
	case !slices.Contains(mgmt.Outcomes(), r.Outcome):
		return fmt.Errorf("outcome %q is not one of %v", r.Outcome, mgmt.Outcomes())
	case r.Started.IsZero():
		return errors.New("started is missing")
	case r.Outcome == mgmt.OutcomePending && !r.Finished.IsZero():
		return errors.New("a pending update has a finished time")
	case r.Outcome != mgmt.OutcomePending && r.Finished.IsZero():
		return fmt.Errorf("outcome %s has no finished time", r.Outcome)
	case len(r.Reason) > maxRecordReasonBytes:
		return fmt.Errorf("reason is %d bytes, more than %d", len(r.Reason), maxRecordReasonBytes)
	}
	return nil
}

// marshalLastUpdate encodes r as the file holds it.
func marshalLastUpdate(r mgmt.LastUpdate) ([]byte, error) {
	if len(r.Reason) > maxRecordReasonBytes {
		r.Reason = r.Reason[:maxRecordReasonBytes]
	}
	if err := checkLastUpdate(r); err != nil {
		return nil, fmt.Errorf("update: %s: %w", layout.LastUpdateFile, err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("update: %s: %w", layout.LastUpdateFile, err)
	}
	// One sector, padded: a reason whose JSON does not fit is cut.
	for len(b) >= layout.LastUpdateBytes && r.Reason != "" {
		r.Reason = cutRunes(r.Reason, len(r.Reason)-(len(b)-layout.LastUpdateBytes+1)-8)
		if b, err = json.Marshal(r); err != nil {
			return nil, fmt.Errorf("update: %s: %w", layout.LastUpdateFile, err)
		}
	}
	if len(b) >= layout.LastUpdateBytes {
		return nil, fmt.Errorf("update: %s: record is %d bytes, more than %d", layout.LastUpdateFile, len(b), layout.LastUpdateBytes-1)
	}
	padded := layout.EmptyLastUpdate()
	copy(padded, b)
	return padded, nil
}

// cutRunes returns the longest prefix of s of at most n bytes (n < 0: "")
// that ends on a rune boundary.
func cutRunes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// saveLastUpdate replaces the record in bootDir with r: one sector
// written in place over the padded file every image has
// (slot.WriteFile), so a power cut leaves the old record or the new one
// and the boot partition's allocation never changes. An image built
// before the record existed gets the file once, by temporary file and
// rename.
func saveLastUpdate(bootDir string, r mgmt.LastUpdate) error {
	b, err := marshalLastUpdate(r)
	if err != nil {
		return err
	}
	if err := slot.WriteFile(filepath.Join(bootDir, layout.LastUpdateFile), b); err != nil {
		return fmt.Errorf("update: %s: %w", layout.LastUpdateFile, err)
	}
	return nil
}

// resolveLastUpdate decides a pending record r from slot.json s, once s
// no longer has r's slot on trial: the slot is active (confirmed), slot.json's
// last failure names it (failed, with its reason), or else the trial is
// gone (cancelled). It reports whether r changed.
func resolveLastUpdate(r mgmt.LastUpdate, s slot.State, now time.Time) (mgmt.LastUpdate, bool) {
	n := slot.Name(r.Slot)
	if r.Outcome != mgmt.OutcomePending || s.Trial == n {
		return r, false
	}
	r.Finished = now
	switch {
	case s.Active == n:
		r.Outcome = mgmt.OutcomeConfirmed
	case s.LastFailed != nil && s.LastFailed.Slot == n:
		r.Outcome, r.Reason = mgmt.OutcomeFailed, s.LastFailed.Reason
	default:
		r.Outcome, r.Reason = mgmt.OutcomeCancelled, "slot.json no longer holds the trial"
	}
	return r, true
}

// ResolveLastUpdate brings the record in bootDir in line with s, slot.json
// as just written or read: a pending update whose trial s no longer holds
// is confirmed, failed or cancelled (resolveLastUpdate). Every place that
// decides a trial calls it after writing slot.json, and the agent at
// startup, for a trial that never came up (the host loader fell back). It
// returns the record as it is now (nil: none) and the error of a write
// that failed, which callers log and otherwise ignore.
func ResolveLastUpdate(bootDir string, s slot.State, now time.Time) (*mgmt.LastUpdate, error) {
	r := ReadLastUpdate(bootDir)
	if r == nil {
		return nil, nil
	}
	next, changed := resolveLastUpdate(*r, s, now)
	if !changed {
		return r, nil
	}
	if err := saveLastUpdate(bootDir, next); err != nil {
		return r, err
	}
	return &next, nil
}

// endLastUpdate records that a rollback or a new update ended the update
// to slot n: only a record of that slot, pending (or, for
// mgmt.OutcomeRolledBack, also confirmed) changes. It reports whether the
// record changed.
func endLastUpdate(bootDir string, n slot.Name, outcome, reason string, now time.Time) (bool, error) {
	r := ReadLastUpdate(bootDir)
	if r == nil || r.Slot != string(n) {
		return false, nil
	}
	switch {
	case r.Outcome == mgmt.OutcomePending:
	case r.Outcome == mgmt.OutcomeConfirmed && outcome == mgmt.OutcomeRolledBack:
	default:
		return false, nil
	}
	r.Outcome, r.Reason, r.Finished = outcome, reason, now
	if err := saveLastUpdate(bootDir, *r); err != nil {
		return false, err
	}
	return true, nil
}
