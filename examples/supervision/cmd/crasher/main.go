// Command crasher is the crash-looping service of the supervision example:
// it runs for a moment and exits with status 1, so ingot-init's restart
// backoff can be watched on the console.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	after := flag.Duration("after", 200*time.Millisecond, "how long to run before crashing")
	flag.Parse()
	fmt.Println("running; crashing soon")
	time.Sleep(*after)
	fmt.Fprintln(os.Stderr, "crashing on purpose")
	os.Exit(1)
}
