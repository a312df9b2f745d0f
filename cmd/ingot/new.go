package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ingotdev/ingot/builder/config"
)

func runNew(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fset := newFlagSet("new", "DIR", stderr)
	name := fset.String("name", "", "appliance name (default: the directory's base name)")
	if err := parseArgs(fset, args, 1, "want exactly one directory"); err != nil {
		return err
	}
	dir := fset.Arg(0)
	if *name == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		*name = filepath.Base(abs)
	}
	if err := config.ValidName(*name); err != nil {
		return usageError{fmt.Sprintf("appliance name %q: %v (use -name)", *name, err)}
	}
	cfgPath := filepath.Join(dir, config.FileName)
	if _, err := os.Stat(cfgPath); err == nil {
		return fmt.Errorf("%s already exists; not overwriting", cfgPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tokenPath := filepath.Join(dir, config.DefaultTokenFile)
	if err := os.MkdirAll(filepath.Dir(tokenPath), 0o700); err != nil {
		return err
	}
	tok, err := config.NewToken()
	if err != nil {
		return err
	}
	if err := os.WriteFile(tokenPath, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, config.Scaffold(*name), 0o644); err != nil {
		return err
	}
	if err := scaffoldService(dir, *name); err != nil {
		return err
	}
	certPath := filepath.Join(dir, filepath.FromSlash(config.DefaultTLSCertFile))
	pin, err := writeCertificate(*name, certPath, filepath.Join(dir, filepath.FromSlash(config.DefaultTLSKeyFile)), false)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	fmt.Fprintf(stdout, "created %s, %s and %s (sha256 %s)\nnext: ingot build -C %s\n", cfgPath, tokenPath, certPath, pin, dir)
	return nil
}

// scaffoldService writes the Go service the scaffolded ingot.yaml names,
// ./cmd/NAME, and a go.mod when the directory is not in a module yet, so
// that `ingot build` works right away.
func scaffoldService(dir, name string) error {
	mainPath := filepath.Join(dir, "cmd", name, "main.go")
	if _, err := os.Stat(mainPath); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(mainPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(mainPath, []byte(serviceTemplate), 0o644); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
		return nil
	}
	gomod := fmt.Sprintf("module %s\n\ngo 1.26\n", name)
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644)
}

const serviceTemplate = `// Command is this appliance's service: replace it with yours.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s (build %s)\n", os.Getenv("INGOT_SERVICE"), os.Getenv("INGOT_BUILD_ID"))
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
`
