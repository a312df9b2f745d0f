package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/ingotdev/ingot/rootfs"
)

func main() {
	pf, _ := os.Create("/tmp/fd.prof")
	pprof.StartCPUProfile(pf)
	for i := 0; i < 10; i++ {
		t0 := time.Now()
		_, err := rootfs.FromDir(os.Args[1])
		if err != nil {
			panic(err)
		}
		fmt.Println(time.Since(t0))
	}
	pprof.StopCPUProfile()
}
