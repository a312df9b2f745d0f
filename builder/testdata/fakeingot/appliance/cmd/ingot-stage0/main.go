// Command ingot-stage0 stands in for the initramfs's /init in builder tests.
package main

func main() { println("fake ingot-stage0") }
