// Command ingot-stage0 is /init in an ingot VM's initramfs: it loads the
// kernel modules the initramfs carries, finds and mounts the root slot,
// switches root and executes ingot-init there (package stage0). It is a
// program of its own, not a mode of ingot-init, so that the initramfs
// holds 1.5 MB of code instead of 10 MB: the kernel unpacks less, a
// guest needs less memory to boot, and the first program starts without
// initialising the agent's, updater's and container launcher's packages
// (0.1 s under TCG).
package main

import "github.com/ingotdev/ingot/appliance/stage0"

func main() { stage0.Main() }
