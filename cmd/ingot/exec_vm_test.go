package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
)

// execBoxScript is the box service: it logs its own credentials and
// restrictions (to compare with an exec's) and sleeps.
const execBoxScript = `#!/bin/sh
grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
echo ready
exec sleep 1000000
`

// execApplets are linked to /bin/busybox in the test images.
var execApplets = []string{"sh", "echo", "cat", "grep", "sleep", "stty", "ps", "id", "kill", "tr", "ls"}

// statusFields are the lines of /proc/PID/status that say what a process
// may do.
var statusFields = regexp.MustCompile(`(?m)^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):.*$`)

// execVM is a booted appliance with the box service, and the ingot CLI
// built from this package.
type execVM struct {
	t       *testing.T
	dir     string
	appDir  string
	runDir  string
	cli     string
	client  *mgmt.Client
	console *vmtest.Console
}

// bootExecVM builds the CLI and an appliance whose service box is a
// busybox image running as root (with debug: a busybox debug image
// too), boots it under TCG and waits for box to run.
func bootExecVM(t *testing.T, withDebug bool) *execVM {
	return bootExecVMArch(t, "amd64", withDebug)
}

// bootExecVMArch is bootExecVM for vm-amd64 or vm-arm64.
func bootExecVMArch(t *testing.T, arch string, withDebug bool) *execVM {
	vmtest.Kernel(t, arch)
	target, busybox := config.TargetVMAmd64, []byte(nil)
	var err error
	switch arch {
	case "amd64":
		if busybox, err = os.ReadFile("/bin/busybox"); err != nil {
			t.Fatalf("busybox-static (scripts/setup.sh installs it): %v", err)
		}
	case "arm64":
		target = config.TargetVMArm64
		deb, x := vmtest.BusyboxARM64(t), t.TempDir()
		if out, err := exec.Command("dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
		if busybox, err = os.ReadFile(filepath.Join(x, "bin/busybox")); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("no test appliance for %s", arch)
	}
	dir := t.TempDir()
	v := &execVM{t: t, dir: dir, appDir: filepath.Join(dir, "app"), runDir: filepath.Join(dir, "run"), cli: filepath.Join(dir, "ingot")}
	if out, err := exec.Command("go", "build", "-o", v.cli, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build the ingot CLI: %v\n%s", err, out)
	}

	base := []ocitest.Entry{
		{Name: "bin/busybox", Body: busybox, Mode: 0o755},
		ocitest.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
		ocitest.File("etc/group", "root:x:0:\n"),
	}
	for _, a := range execApplets {
		base = append(base, ocitest.Symlink("bin/"+a, "busybox"))
	}
	l1, err := ocitest.LayerOf(base...)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ocitest.LayerOf(ocitest.Entry{Name: "app/run.sh", Body: []byte(execBoxScript), Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	platform := v1.Platform{OS: "linux", Architecture: arch}
	box, err := ocitest.Image(platform, v1.Config{Entrypoint: []string{"/app/run.sh"}, Env: []string{"PATH=/bin"}}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	debug, err := ocitest.Image(platform, v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, l1)
	if err != nil {
		t.Fatal(err)
	}
	reg := ocitest.NewRegistry()
	t.Cleanup(reg.Close)
	boxRef, debugRef := reg.Host+"/box:1", reg.Host+"/debug:1"
	if err := ocitest.Push(boxRef, box); err != nil {
		t.Fatal(err)
	}
	if err := ocitest.Push(debugRef, debug); err != nil {
		t.Fatal(err)
	}

	if err := os.CopyFS(filepath.Join(v.appDir, ".ingot"), os.DirFS("../../examples/hello/.ingot")); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("name: execapp\ntargets: [%s]\nperm: false\nservices:\n  - name: box\n    image: %s\n", target, boxRef)
	if withDebug {
		yaml += fmt.Sprintf("debug: {image: %s}\n", debugRef)
	}
	if err := os.WriteFile(filepath.Join(v.appDir, config.FileName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(v.appDir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(dir, "execapp.img")
	if _, err := assemble.Image(t.Context(), cfg, target, image, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}

	v.console = &vmtest.Console{}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(ctx, vm.Config{Image: image, RunDir: v.runDir, Accel: qemu.AccelTCG, MemoryMiB: 512, Console: v.console, Logf: t.Logf})
	}()
	t.Cleanup(func() {
		stop()
		<-done
		if t.Failed() {
			t.Logf("console (tail):\n%s", v.console.Tail(150))
		}
	})
	tok, err := os.ReadFile(filepath.Join(v.appDir, ".ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	v.client, err = mgmt.NewClient(v.target(), string(tok))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("init's log:\n%s", strings.Join(v.logLines("init"), "\n"))
			t.Logf("box's log:\n%s", strings.Join(v.logLines("box"), "\n"))
		}
		v.client.Close()
	})
	v.waitLog("box", "ready", 5*time.Minute)
	return v
}

func (v *execVM) target() string {
	return fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(v.runDir), config.DefaultVsockPort)
}

// cliArgs are the management flags of every CLI call.
func (v *execVM) cliArgs(cmd string, args ...string) []string {
	return append([]string{cmd, "-target", v.target(), "-token-file", filepath.Join(v.appDir, ".ingot/token")}, args...)
}

// run runs the CLI without a terminal and returns its stdout, stderr and
// exit status.
func (v *execVM) run(cmd string, args ...string) (string, string, int) {
	v.t.Helper()
	c := exec.Command(v.cli, v.cliArgs(cmd, args...)...)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		v.t.Fatalf("ingot %s: %v", cmd, err)
	}
	return out.String(), errOut.String(), code
}

// logLines returns a log of this boot.
func (v *execVM) logLines(name string) []string {
	var lines []string
	// Not the test's context: this also runs in cleanups, after it ended.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := v.client.Logs(ctx, name, -1, false)
	if err != nil {
		return nil
	}
	defer s.Close()
	for {
		l, err := s.Next()
		if err != nil {
			return lines
		}
		lines = append(lines, strings.TrimSpace(l.Text))
	}
}

// waitLog waits until a line of the named log contains want.
func (v *execVM) waitLog(name, want string, limit time.Duration) []string {
	v.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		lines := v.logLines(name)
		if slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, want) }) {
			return lines
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("log %s has no %q within %s:\n%s", name, want, limit, strings.Join(lines, "\n"))
		}
		time.Sleep(time.Second)
	}
}

// tmux drives a terminal on a private server.
type tmux struct {
	t    *testing.T
	sock string
}

func (x tmux) cmd(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", x.sock}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (x tmux) screen() string { return x.cmd("capture-pane", "-p", "-t", "s", "-S", "-500") }

// waitScreen waits until the pane matches re and returns the match.
func (x tmux) waitScreen(re *regexp.Regexp, limit time.Duration) []string {
	x.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s := x.screen()
		if m := re.FindStringSubmatch(s); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("the terminal shows no %s within %s:\n%s", re, limit, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestVMExec drives `ingot exec -it box -- sh` in a real terminal (tmux):
// the shell is in the container's pid namespace and sees the container's
// PID 1, the terminal's size follows a resize, Ctrl-C interrupts a sleep,
// and `exit 3` becomes ingot's exit status. A command without a terminal
// keeps stdout and stderr apart and has exactly the service's
// credentials, capabilities, no_new_privs, seccomp and cgroup; a SIGINT
// to ingot reaches the command; a client killed mid-session takes its
// command with it. Init's log records each session.
func TestVMExec(t *testing.T) { testVMExec(t, "amd64") }

// TestVMExecARM64 is TestVMExec on vm-arm64 under qemu-system-aarch64:
// setns, the cgroup join and the seccomp filter of an exec on the other
// architecture.
func TestVMExecARM64(t *testing.T) { testVMExec(t, "arm64") }

func testVMExec(t *testing.T, arch string) {
	v := bootExecVMArch(t, arch, false)

	// Without a terminal: the exec's restrictions are the service's.
	svc := statusFields.FindAllString(strings.Join(v.logLines("box"), "\n"), -1)
	out, errOut, code := v.run("exec", "box", "--", "grep", "-E", "^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):", "/proc/self/status")
	if code != 0 {
		t.Fatalf("ingot exec box -- grep: exit %d\n%s%s", code, out, errOut)
	}
	got := statusFields.FindAllString(out, -1)
	if len(svc) != 9 || !slices.Equal(got, svc) {
		t.Errorf("an exec runs with\n%s\nwant the service's own\n%s", strings.Join(got, "\n"), strings.Join(svc, "\n"))
	}
	out, errOut, code = v.run("exec", "box", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
	if code != 7 || out != "to-out\n" || errOut != "to-err\n" {
		t.Errorf("non-tty exec: exit %d, stdout %q, stderr %q; want 7, \"to-out\\n\", \"to-err\\n\"", code, out, errOut)
	}
	// -i: stdin reaches the command, and its end ends the input.
	in := exec.Command(v.cli, v.cliArgs("exec", "-i", "box", "--", "sh", "-c", "cat; echo done")...)
	in.Stdin = strings.NewReader("piped in\n")
	if got, err := in.Output(); err != nil || string(got) != "piped in\ndone\n" {
		t.Errorf("ingot exec -i box -- cat with stdin: %q, %v; want \"piped in\\ndone\\n\"", got, err)
	}
	// In the service's cgroup, seen through a cgroup namespace rooted
	// there, as the service sees it.
	out, errOut, code = v.run("exec", "box", "--", "sh", "-c", `cat /proc/self/cgroup; grep -qx $$ /sys/fs/cgroup/cgroup.procs && echo in-service-group`)
	if code != 0 || out != "0::/\nin-service-group\n" {
		t.Errorf("exec's cgroup: exit %d, %q %q; want \"0::/\" and its pid in the service's cgroup.procs", code, out, errOut)
	}

	// With a terminal, in tmux.
	x := newTmux(t, v.dir)
	x.cmd("send-keys", "-t", "s", v.cliLine("exec", "-it", "box", "--", "sh"), "Enter")

	x.cmd("send-keys", "-t", "s", "echo PID=$$", "Enter")
	m := x.waitScreen(regexp.MustCompile(`(?m)^PID=(\d+)\s*$`), 3*time.Minute)
	if pid, _ := strconv.Atoi(m[1]); pid < 2 || pid > 100 {
		t.Errorf("the exec'd shell is pid %d; want a small pid of the container's pid namespace", pid)
	}
	x.cmd("send-keys", "-t", "s", "cat /proc/1/cmdline | tr '\\0' ' '; echo", "Enter")
	x.waitScreen(regexp.MustCompile(`(?m)^/init container box\s*$`), time.Minute)

	// The resize travels as a frame sent on ingot's SIGWINCH, and a
	// command typed right after it may overtake it (as in any terminal
	// over a network), so stty asks again until the new size is there.
	x.cmd("resize-window", "-t", "s", "-x", "100", "-y", "30")
	sizes := regexp.MustCompile(`(?m)^(\d+ \d+)\s*$`)
	for try := 1; ; try++ {
		before := len(sizes.FindAllString(x.screen(), -1))
		x.cmd("send-keys", "-t", "s", "stty size", "Enter")
		deadline := time.Now().Add(time.Minute)
		var all [][]string
		for len(all) <= before && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			all = sizes.FindAllStringSubmatch(x.screen(), -1)
		}
		if len(all) <= before {
			t.Fatalf("stty size printed nothing:\n%s", x.screen())
		}
		if all[len(all)-1][1] == "30 100" {
			break
		}
		if try == 10 {
			t.Fatalf("after the resize to 30x100, stty size says %s:\n%s", all[len(all)-1][1], x.screen())
		}
	}

	// (ash drops the rest of a line whose job was interrupted, so the
	// status is asked for on a line of its own.)
	x.cmd("send-keys", "-t", "s", "sleep 100", "Enter")
	// Ctrl-C only once sleep runs: a second session (no terminal) looks.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _, _ := v.run("exec", "box", "--", "ps")
		if strings.Contains(out, "sleep 100") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep 100 never showed in the container's ps:\n%s\nterminal:\n%s", out, x.screen())
		}
		time.Sleep(time.Second)
	}
	x.cmd("send-keys", "-t", "s", "C-c")
	x.cmd("send-keys", "-t", "s", "echo AFTER=$?", "Enter")
	x.waitScreen(regexp.MustCompile(`(?m)^AFTER=130\s*$`), time.Minute)

	x.cmd("send-keys", "-t", "s", "exit 3", "Enter")
	x.waitScreen(regexp.MustCompile(`(?m)^INGOT-EXIT=3\s*$`), time.Minute)

	waitPS := func(cmd string, present bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			out, _, _ := v.run("exec", "box", "--", "ps")
			if strings.Contains(out, cmd) == present {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s present=%t in the container's ps, want %t:\n%s", cmd, !present, present, out)
			}
			time.Sleep(time.Second)
		}
	}
	// Without a terminal, a SIGINT to ingot goes to the command as a
	// signal frame.
	cli := exec.Command(v.cli, v.cliArgs("exec", "box", "--", "sleep", "444")...)
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	waitPS("sleep 444", true)
	_ = cli.Process.Signal(syscall.SIGINT)
	if err := cli.Wait(); cli.ProcessState.ExitCode() != 130 {
		t.Errorf("ingot exec box -- sleep 444 after SIGINT: %v, want exit status 130", err)
	}
	// A client that vanishes (SIGKILL, no goodbye) takes its command
	// with it: the agent sees the connection end and hangs it up.
	cli = exec.Command(v.cli, v.cliArgs("exec", "box", "--", "sleep", "555")...)
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	waitPS("sleep 555", true)
	_ = cli.Process.Kill()
	_ = cli.Wait()
	waitPS("sleep 555", false)

	// Init's log: each session, its peer, service, command and status.
	lines := v.waitLog("init", `exec in box ["sh"] (tty true) ended`, time.Minute)
	log := strings.Join(lines, "\n")
	for _, re := range []string{
		`session \d+ from \S+: exec in box \["sh"\] \(tty true\) started`,
		`session \d+ from \S+: exec in box \["sh"\] \(tty true\) ended after \S+: exit status 3`,
		`session \d+ from \S+: exec in box \["sh" "-c" "echo to-out; echo to-err >&2; exit 7"\] \(tty false\) ended after \S+: exit status 7`,
	} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("init's log has no line matching %s:\n%s", re, log)
		}
	}
}

// newTmux starts a private tmux server with one 120x40 window running the
// host's sh, without a status line (so the pane is the window).
func newTmux(t *testing.T, dir string) tmux {
	x := tmux{t: t, sock: filepath.Join(dir, "tmux.sock")}
	x.cmd("-f", "/dev/null", "new-session", "-d", "-s", "s", "-x", "120", "-y", "40", "sh")
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", x.sock, "kill-server").Run() })
	x.cmd("set-option", "-g", "status", "off")
	return x
}

// cliLine is a host shell line running the CLI and then printing its exit
// status as INGOT-EXIT=N.
func (v *execVM) cliLine(cmd string, args ...string) string {
	return strings.Join(append([]string{v.cli}, v.cliArgs(cmd, args...)...), " ") + `; echo INGOT-EXIT=$?`
}

// TestVMShell starts the debug container with `ingot shell`: its ps lists
// the appliance's services (in a terminal driven through tmux, and
// without one), it runs as the debug user, and it can neither signal a
// service, nor read a service's environment, nor write a sysctl (the
// attacks a debug shell must not manage); what it leaves in the
// background dies with the session. An appliance without debug:
// refuses `ingot shell` with a message saying how to get one.
func TestVMShell(t *testing.T) {
	t.Run("debug", testVMShellDebug)
	t.Run("without debug", func(t *testing.T) {
		v := bootExecVM(t, false)
		out, errOut, code := v.run("shell", "-t=false", "--", "id")
		if code == 0 || !strings.Contains(errOut, "no debug container") || !strings.Contains(errOut, "debug: {image: REF}") {
			t.Errorf("ingot shell without debug: exit %d, stdout %q, stderr %q; want a refusal naming debug:", code, out, errOut)
		}
		lines := v.waitLog("init", "refused", time.Minute)
		if !regexp.MustCompile(`session \d+ from \S+: shell \["id"\] \(tty false\) refused: .*no debug container`).MatchString(strings.Join(lines, "\n")) {
			t.Errorf("init's log lacks the refused shell:\n%s", strings.Join(lines, "\n"))
		}
	})
}

func testVMShellDebug(t *testing.T) {
	v := bootExecVM(t, true)

	// In a terminal: the debug image's own command, /bin/sh.
	x := newTmux(t, v.dir)
	x.cmd("send-keys", "-t", "s", v.cliLine("shell"), "Enter")
	x.cmd("send-keys", "-t", "s", "echo UID=$(id -u) TTY=$(stty size)", "Enter")
	x.waitScreen(regexp.MustCompile(`(?m)^UID=65533 TTY=40 120\s*$`), 3*time.Minute)
	x.cmd("send-keys", "-t", "s", "ps", "Enter")
	x.waitScreen(regexp.MustCompile(`(?m)^\s*\d+ root .*sleep 1000000\s*$`), time.Minute)
	x.cmd("send-keys", "-t", "s", "exit 4", "Enter")
	x.waitScreen(regexp.MustCompile(`(?m)^INGOT-EXIT=4\s*$`), time.Minute)

	st, err := v.client.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !st.HasFeature(mgmt.FeatureShell) || !st.HasFeature(mgmt.FeatureExec) {
		t.Errorf("features %v, want exec and shell", st.Features)
	}
	var boxPID int
	for _, s := range st.Services {
		if s.Name == "box" {
			boxPID = s.PID
		}
	}
	if boxPID == 0 {
		t.Fatalf("box has no pid: %+v", st.Services)
	}

	out, errOut, code := v.run("shell", "-t=false", "--", "ps")
	if code != 0 {
		t.Fatalf("ingot shell -- ps: exit %d\n%s%s", code, out, errOut)
	}
	// The box service: its launcher and its program (the VM's network is
	// static, so there is no dhcp service).
	for _, want := range []string{"/init container box", "sleep 1000000"} {
		if !strings.Contains(out, want) {
			t.Errorf("the debug shell's ps lacks %q:\n%s", want, out)
		}
	}
	// The debug image was never started before: the only processes of
	// the debug user are this session's (its launcher and ps), and no
	// service runs it.
	if n := len(regexp.MustCompile(`(?m)^\s*\d+ 65533 `).FindAllString(out, -1)); n != 2 {
		t.Errorf("%d processes of uid 65533, want 2 (this session's /init shell and ps):\n%s", n, out)
	}
	if len(st.Services) != 1 || st.Services[0].Name != "box" {
		t.Errorf("services %+v, want box alone (the debug image is no service)", st.Services)
	}
	if !regexp.MustCompile(`(?m)^\s*1 .*/init\s*$`).MatchString(out) {
		t.Errorf("the debug shell's ps does not show the appliance's PID 1 (/init):\n%s", out)
	}

	attack := fmt.Sprintf(`sleep 777 >/dev/null 2>&1 & id; kill -TERM %d; echo kill=$?; cat /proc/%d/environ >/dev/null; echo environ=$?; echo 2 > /proc/sys/vm/overcommit_memory; echo sysctl=$?; echo overcommit=$(cat /proc/sys/vm/overcommit_memory)`, boxPID, boxPID)
	out, errOut, _ = v.run("shell", "-t=false", "--", "sh", "-c", attack)
	for _, want := range []string{"uid=65533 gid=65533", "kill=1", "environ=1", "sysctl=1", "overcommit=0"} {
		if !strings.Contains(out, want) {
			t.Errorf("debug shell: output lacks %q:\n%s%s", want, out, errOut)
		}
	}
	// What the shell left in the background died with its session (its
	// cgroup is killed when it exits).
	out, errOut, _ = v.run("shell", "-t=false", "--", "ps")
	if strings.Contains(out, "sleep 777") || !strings.Contains(out, "sleep 1000000") {
		t.Errorf("after the session, ps shows:\n%s%s\nwant box's sleep 1000000 and no sleep 777 left by the last shell", out, errOut)
	}
	st, err = v.client.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Services {
		if s.Name == "box" && (s.PID != boxPID || s.Restarts != 0) {
			t.Errorf("box after the debug shell's kill: pid %d (was %d), %d restarts", s.PID, boxPID, s.Restarts)
		}
	}
	lines := v.waitLog("init", `shell ["ps"] (tty false) ended`, time.Minute)
	if !regexp.MustCompile(`session \d+ from \S+: shell \["ps"\] \(tty false\) ended after \S+: exit status 0`).MatchString(strings.Join(lines, "\n")) {
		t.Errorf("init's log lacks the shell session:\n%s", strings.Join(lines, "\n"))
	}
}
