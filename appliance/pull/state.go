package pull

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	"github.com/ingotdev/ingot/mgmt"
)

// Files in Config.StateDir.
const (
	// stateFile holds persistent: what runs, what is on trial, what failed.
	stateFile = "state.json"
	// journalFile records the pieces of an install in progress that are
	// written and synced to the slot.
	journalFile = "journal.json"
	// authFile holds registry credentials (mgmt.RegistryAuth), mode 0600.
	authFile = "auth.json"
	// maxStateBytes bounds what is read back from each of them.
	maxStateBytes = 4 << 20
	// maxFailed bounds the remembered failed releases; the oldest go.
	maxFailed = 64
)

// persistent is the puller's state across boots.
type persistent struct {
	// Running is the pulled release this appliance runs (confirmed).
	Running *mgmt.ReleaseInfo `json:"running,omitempty"`
	// Trial is the release committed last, until its trial is decided.
	Trial *trialRecord `json:"trial,omitempty"`
	// Failed are releases whose trial failed here, oldest first.
	Failed []mgmt.PullFailure `json:"failed,omitempty"`
}

type trialRecord struct {
	Info      mgmt.ReleaseInfo `json:"info"`
	Slot      string           `json:"slot"`
	BuildID   string           `json:"build_id,omitempty"`
	Committed time.Time        `json:"committed"`
}

func (s *persistent) failed(digest string) (mgmt.PullFailure, bool) {
	for _, f := range s.Failed {
		if f.Digest == digest {
			return f, true
		}
	}
	return mgmt.PullFailure{}, false
}

func (s *persistent) addFailed(f mgmt.PullFailure) {
	if _, ok := s.failed(f.Digest); ok {
		return
	}
	s.Failed = append(s.Failed, f)
	if len(s.Failed) > maxFailed {
		s.Failed = s.Failed[len(s.Failed)-maxFailed:]
	}
}

func loadState(dir string) (persistent, error) {
	var s persistent
	if dir == "" {
		return s, nil
	}
	if err := readJSON(filepath.Join(dir, stateFile), &s); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return persistent{}, err
	}
	return s, nil
}

func (s *persistent) save(dir string) error {
	if dir == "" {
		return nil
	}
	return writeJSON(dir, stateFile, s, 0o644)
}

// journal records an install in progress: which release and slot, and
// which of its pieces are in the slot, written and synced.
type journal struct {
	// Manifest is the digest of the target's manifest; Root the digest of
	// the whole root; Slot where it is written.
	Manifest string `json:"manifest"`
	Root     string `json:"root"`
	Slot     string `json:"slot"`
	// Done are the indexes of written pieces, ascending.
	Done []int `json:"done"`
}

func loadJournal(dir string) (*journal, error) {
	if dir == "" {
		return nil, nil
	}
	var j journal
	if err := readJSON(filepath.Join(dir, journalFile), &j); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &j, nil
}

func (j *journal) save(dir string) error {
	if dir == "" {
		return nil
	}
	return writeJSON(dir, journalFile, j, 0o644)
}

func removeJournal(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.Remove(filepath.Join(dir, journalFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pull: %w", err)
	}
	return nil
}

// readJSON decodes the file at path strictly, bounded by maxStateBytes.
func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return fmt.Errorf("pull: %s: %w", path, err)
	}
	if len(data) > maxStateBytes {
		return fmt.Errorf("pull: %s: larger than %d bytes", path, maxStateBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("pull: %s: %w", path, err)
	}
	return nil
}

// writeJSON replaces dir/name with v atomically and durably.
func writeJSON(dir, name string, v any, mode os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("pull: %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if err := renameio.WriteFile(filepath.Join(dir, name), append(data, '\n'), mode); err != nil {
		return fmt.Errorf("pull: %s: %w", name, err)
	}
	return nil
}
