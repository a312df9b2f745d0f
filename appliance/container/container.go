// Package container runs an image service: the launcher behind
// `/init container <service>` that turns the service's spec.Container (an
// image flattened into the read-only root at /oci/<service>/rootfs) into
// an isolated process.
//
// # Processes
//
// The supervisor starts `/init container <name>` with CloneFlags, so the
// launcher is born as PID 1 of fresh mount, pid, uts and ipc namespaces
// (and net, if the container asks), inside the service's cgroup. No Go
// process forks after its threads exist other than through fork+exec, so
// the work is split between two executions of the same binary:
//
//  1. the namespace init (this process, PID 1 inside): loads
//     /etc/ingot/appliance.json, starts stage 2 (the same binary, via
//     /proc/self/exe, in a session of its own), builds the container's
//     mount tree, sets the hostname and pivot_roots into the image, which
//     moves stage 2's root along (it was started from the old root, so
//     its binary and, in tests, its dynamic loader were found there);
//     then it sends stage 2 its plan over a pipe and stays as a tiny
//     init: it reaps orphans, forwards SIGTERM, SIGINT,
//     SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the program's
//     process group, and exits with the program's status (128+N when a
//     signal N ended it) as soon as the program exits, which makes the
//     kernel kill whatever else is left in the pid namespace.
//  2. the exec stage, on one locked OS thread: enters a new cgroup
//     namespace rooted at the service's cgroup and mounts it on
//     /sys/fs/cgroup (read-only unless privileged), drops the capability
//     bounding set to Docker's default (unless privileged), clears
//     inheritable and ambient capabilities, sets no_new_privs, switches to
//     the image user and groups, changes to the working directory, loads
//     the seccomp filter (unless privileged; see deniedSyscalls) and
//     execve's the entrypoint, whose parent is PID 1.
//
// Why the launcher stays as PID 1 instead of exec'ing the program there
// (Docker without --init): the init of a pid namespace only gets the
// signals it has handlers for, so a program that never installed a SIGTERM
// handler would ignore the supervisor's stop and always wait out the grace
// period for SIGKILL; and nobody would reap the zombies of programs that
// do not expect to be init. Our init is a few hundred KiB of resident Go
// runtime, counted against the service's memory limit. The container
// still sees a fresh pid namespace: PID 1 is the launcher, its program a
// small pid after the launcher's threads, and no process of the appliance
// is visible.
//
// Why no third process in the appliance's namespaces: the supervisor's
// process group kill, its cgroup and its exit status then all apply to the
// namespace init directly, and a SIGKILL to it takes the whole container
// down; a waiting parent would have to relay all of that and could be
// killed without its child.
//
// # Mount tree
//
// The image root is bind-mounted onto itself (in the private mount
// namespace nothing needs a staging directory) and made read-only, nodev
// and nosuid: an image's device nodes and setuid bits work nowhere, in
// the container or in the appliance's root (mounted nosuid and nodev
// too), so a container keeps only the fixed /dev below and runs its
// setuid programs without privilege (as no_new_privs would anyway);
// then, in this order: /proc (new, for the pid namespace) and a read-only
// /sys, in both of which what reaches beyond the container is
// read-only (/proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus,
// /proc/fs) or masked (/proc/kcore, /proc/keys, /proc/timer_list,
// /sys/firmware and the rest of runc's list) unless privileged; /dev, a
// tmpfs with null, zero, full, random, urandom and tty, the /dev/fd,
// stdin, stdout, stderr and ptmx links, a private devpts instance on
// /dev/pts and a tmpfs on /dev/shm; tmpfs on /tmp and /run; the volumes
// from /perm (created if missing, owned by the container user) in path
// order, read-only where asked, always nosuid and nodev; and, read-only,
// /etc/resolv.conf (a bind of the copy of the appliance's resolver
// configuration that init rewrites in place on every lease, so it stays
// current), /etc/hosts and /etc/hostname (naming the container's hostname,
// staged on a small tmpfs private to the launcher), each unless a volume
// covers it; an image symlink in their place is replaced. The /dev tmpfs is
// made read-only once populated: cgroup v2 has no device controller, so
// a container root with CAP_MKNOD must not find a writable place that
// honours device nodes.
//
// The image is read-only, so a mount point it lacks cannot simply be
// created. Instead the read-only directory that should contain it is
// shadowed: a tmpfs is mounted over it holding a bind mount of each
// original entry (symlinks copied), plus the new mount point, and the
// tmpfs is made read-only again afterwards. Images built from scratch
// (no /proc, /dev or /tmp) and volume targets the image does not have thus
// work without the builder knowing about them. Mount points are never
// followed through symlinks of the image.
//
// # Failures
//
// Every setup failure is printed to stderr (the service's log) as
// "container: <service>: <step>: <error naming the path>" and the exit
// status says which kind: ExitSetup (125) for namespaces, mounts,
// credentials and capabilities, ExitCannotExec (126) when the program was
// found but could not be executed, ExitNotFound (127) when it was not
// found, as shells and Docker do.
package container

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// Exit statuses of the launcher when the program did not run.
const (
	ExitSetup      = 125
	ExitCannotExec = 126
	ExitNotFound   = 127
)

// execStage is argv[3] of the second execution; the supervisor never
// passes a fourth argument.
const execStage = "exec-stage"

// Descriptors of stage 2: it reads its plan (JSON) from execPlanFD and
// closes execReadyFD once it runs.
const (
	execPlanFD  = 3
	execReadyFD = 4
)

// Defaults of the options.
const (
	DefaultPermDir = "/perm"
	// DefaultPath is the PATH of a container whose env has none (Docker's).
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Option configures Main.
type Option func(*options)

type options struct {
	appliancePath string
	rootDir       string
	permDir       string
	hostDev       string
	resolvConf    string
	stageDir      string
	// readOnlyProc mounts /proc read-only (the debug container's, which
	// shows the appliance's processes).
	readOnlyProc bool
}

// WithAppliancePath reads the appliance description from p instead of
// spec.AppliancePath.
func WithAppliancePath(p string) Option { return func(o *options) { o.appliancePath = p } }

// WithRootDir looks up the container's Rootfs (an absolute path in the
// appliance's root filesystem) under dir instead of "/", for tests.
func WithRootDir(dir string) Option { return func(o *options) { o.rootDir = dir } }

// WithPermDir maps volume sources "/perm/..." to dir instead of
// DefaultPermDir, for tests.
func WithPermDir(dir string) Option { return func(o *options) { o.permDir = dir } }

// WithResolvConf bind-mounts p as the container's /etc/resolv.conf instead
// of spec.ContainerResolvConfPath, for tests.
func WithResolvConf(p string) Option { return func(o *options) { o.resolvConf = p } }

// WithStageDir stages the generated /etc files on a tmpfs mounted on dir
// instead of spec.ContainerStageDir, for tests.
func WithStageDir(dir string) Option { return func(o *options) { o.stageDir = dir } }

func defaultOptions() options {
	return options{
		appliancePath: spec.AppliancePath, rootDir: "/", permDir: DefaultPermDir, hostDev: "/dev",
		resolvConf: spec.ContainerResolvConfPath, stageDir: spec.ContainerStageDir,
	}
}

// CloneFlags are the namespaces the launcher of c must be started in, for
// syscall.SysProcAttr.Cloneflags.
func CloneFlags(c *spec.Container) uintptr {
	f := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if c != nil && c.NetworkNamespace {
		f |= unix.CLONE_NEWNET
	}
	return f
}

// Main runs the launcher for args (os.Args: argv[1] is
// spec.ContainerSubcommand, argv[2] the service name) and exits; it never
// returns.
func Main(args []string, opts ...Option) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case len(args) == 3 && args[1] == spec.ContainerSubcommand:
		os.Exit(runInit(args, o))
	case len(args) == 4 && args[1] == spec.ContainerSubcommand && args[3] == execStage:
		os.Exit(runExec(args[2]))
	}
	fmt.Fprintf(os.Stderr, "container: usage: %s %s <service>\n", args[0], spec.ContainerSubcommand)
	os.Exit(ExitSetup)
}

// stepError is a failure of one named setup step.
type stepError struct {
	step string
	err  error
	code int
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }

func fail(step string, err error) *stepError {
	return &stepError{step: step, err: err, code: ExitSetup}
}

// report prints err for the service's log and returns the exit status.
func report(service string, err error) int {
	fmt.Fprintf(os.Stderr, "container: %s: %v\n", service, err)
	if se, ok := err.(*stepError); ok {
		return se.code
	}
	return ExitSetup
}
