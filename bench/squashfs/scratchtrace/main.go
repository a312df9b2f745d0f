package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/trace"
	"time"

	"github.com/ingotdev/ingot/packer/squashfs"
	"github.com/ingotdev/ingot/rootfs"
)

func main() {
	fmt.Println("GOMAXPROCS", runtime.GOMAXPROCS(0))
	tf, _ := os.Create("/tmp/trace.out")
	trace.Start(tf)
	t0 := time.Now()
	tree, err := rootfs.FromDir(os.Args[1])
	if err != nil {
		panic(err)
	}
	t1 := time.Now()
	f, _ := os.Create(os.Args[2])
	err = squashfs.Write(context.Background(), f, tree, squashfs.WithCompression(squashfs.Compression(len(os.Args[3]))))
	if err != nil {
		panic(err)
	}
	f.Close()
	t2 := time.Now()
	trace.Stop()
	fmt.Println("fromdir", t1.Sub(t0), "write", t2.Sub(t1))
}
