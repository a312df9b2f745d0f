// Package marker is the appliance service the power-cut checks run: it
// keeps a file of fixed content on /perm and says at every start whether
// the file survived. Healthy waits until such an appliance answers.
// internal/powercut and mgmt/push's UEFI test build it.
package marker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ingotdev/ingot/mgmt"
)

// Port is the TCP port the service listens on in the guest.
const Port = 8080

const (
	pollInterval  = 300 * time.Millisecond
	statusTimeout = 5 * time.Second
	httpTimeout   = 2 * time.Second
)

// Source is the service of the marker appliance: at its first start
// it writes a marker file of fixed content to its /perm directory (synced,
// renamed into place, directory synced) and at every later start compares
// the file with that content. It prints the verdict to the console and
// serves it over HTTP (on Port) with the greeting and build, so a
// check sees at once whether /perm survived.
const Source = `package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"os"
)

func content() []byte {
	var b bytes.Buffer
	for i := 0; i < 1024; i++ {
		fmt.Fprintf(&b, "ingot power-loss marker line %04d\n", i)
	}
	return b.Bytes()
}

func write(want []byte) error {
	f, err := os.OpenFile("marker.tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(want); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename("marker.tmp", "marker"); err != nil {
		return err
	}
	d, err := os.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func check() string {
	want := content()
	got, err := os.ReadFile("marker")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := write(want); err != nil {
			return "BAD: write: " + err.Error()
		}
		return "created"
	case err != nil:
		return "BAD: " + err.Error()
	case !bytes.Equal(got, want):
		return fmt.Sprintf("BAD: %d bytes differ from the %d written", len(got), len(want))
	}
	return "ok"
}

func main() {
	verdict := check()
	fmt.Printf("marker %s\n", verdict)
	greeting, build := os.Getenv("GREETING"), os.Getenv("INGOT_BUILD_ID")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\nbuild %s\nmarker %s\n", greeting, build, verdict)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
`

// Healthy waits until the appliance behind c answers on a slot with no
// trial pending and not shutting down, and the marker service answers at
// url with a verdict. exited returns an error once the VM has ended, so
// a VM that failed to start is seen at once. Healthy returns the status
// and the HTTP body.
func Healthy(ctx context.Context, exited func() error, c *mgmt.Client, url string, limit time.Duration) (mgmt.Status, string, error) {
	deadline := time.Now().Add(limit)
	var st mgmt.Status
	var body string
	var err error
	for time.Now().Before(deadline) {
		if err := exited(); err != nil {
			return st, body, err
		}
		st, err = status(ctx, c)
		if err == nil && (st.Slot != "a" && st.Slot != "b" || st.SlotState == nil || st.SlotState.Trial != "" || st.ShuttingDown) {
			err = fmt.Errorf("slot %q, slot.json %+v, shutting down %v", st.Slot, st.SlotState, st.ShuttingDown)
		}
		if err == nil {
			body, err = get(url)
			if err == nil && !strings.Contains(body, "marker ") {
				err = fmt.Errorf("body %q has no marker verdict", body)
			}
			if err == nil {
				return st, body, nil
			}
		}
		select {
		case <-ctx.Done():
			return st, body, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	return st, body, fmt.Errorf("not healthy within %s: %w", limit, err)
}

func status(ctx context.Context, c *mgmt.Client) (mgmt.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	return c.Status(ctx)
}

// get returns the body at url.
func get(url string) (string, error) {
	c := &http.Client{Timeout: httpTimeout}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
