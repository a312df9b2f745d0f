//go:build !unix

package builder

import "os/exec"

func killGroupOnCancel(cmd *exec.Cmd) {}
