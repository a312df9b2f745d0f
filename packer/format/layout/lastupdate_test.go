package layout

import "testing"

func TestCmdlineBuild(t *testing.T) {
	for cmdline, want := range map[string]string{
		"console=ttyS0 panic=1 ingot.build=abc123 ingot.boot=PARTUUID=x\n": "abc123",
		"ingot.build=one ingot.build=two":                                  "two",
		"console=ttyS0 xingot.build=no":                                    "",
		"":                                                                 "",
	} {
		if got := CmdlineBuild(cmdline); got != want {
			t.Errorf("CmdlineBuild(%q) = %q, want %q", cmdline, got, want)
		}
	}
}
