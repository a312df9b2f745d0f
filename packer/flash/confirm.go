package flash

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Ask returns a Confirm that describes the target on out and reads the
// answer from in: only "y" or "yes" writes; anything else, or no answer,
// declines.
func Ask(in io.Reader, out io.Writer) Confirm {
	return func(t Target, imageBytes int64) (bool, error) {
		fmt.Fprintf(out, "%s\n", t)
		fmt.Fprintf(out, "Everything on %s will be overwritten with the %s image. Continue? [y/N] ", t.Path, humanBytes(imageBytes))
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && err != io.EOF {
			return false, err
		}
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "y", "yes":
			return true, nil
		}
		return false, nil
	}
}
