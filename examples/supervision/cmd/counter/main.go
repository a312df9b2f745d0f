// Command counter is the stateful service of the supervision example: it
// counts in the file "count" of its working directory (/perm/counter under
// ingot-init), replacing the file atomically on every tick, so the count
// survives a reboot and is never seen half-written. It prints the count it
// resumes at and the count it stops at, which is how a test checks that
// nothing written before a shutdown is lost.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	countFile = "count"
	tempFile  = "count.tmp"
)

func main() {
	every := flag.Duration("every", 100*time.Millisecond, "how often to count")
	flag.Parse()
	n, err := load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		os.Exit(1)
	}
	wd, _ := os.Getwd()
	fmt.Printf("resuming at %d in %s\n", n, wd)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	counted := false
	for {
		select {
		case sig := <-stop:
			// Every tick's store completed before this one was seen, so n
			// is what the file holds.
			fmt.Printf("stopping at %d (%v)\n", n, sig)
			return
		case <-tick.C:
			if err := store(n + 1); err != nil {
				fmt.Fprintf(os.Stderr, "%v\n", err)
				os.Exit(1)
			}
			n++
			if !counted {
				// Once per run, so a watcher knows a count is on perm.
				fmt.Printf("stored %d\n", n)
				counted = true
			}
		}
	}
}

func load() (uint64, error) {
	b, err := os.ReadFile(countFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("counter: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("counter: %s: %w", countFile, err)
	}
	return n, nil
}

// store writes n to a temporary file, syncs it and renames it over the
// count file, then syncs the directory so the rename itself is durable.
func store(n uint64) error {
	f, err := os.OpenFile(tempFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("counter: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", n)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("counter: %s: %w", tempFile, err)
	}
	if err := os.Rename(tempFile, countFile); err != nil {
		return fmt.Errorf("counter: %w", err)
	}
	d, err := os.Open(".")
	if err != nil {
		return fmt.Errorf("counter: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("counter: sync directory: %w", err)
	}
	return nil
}
