// Command ingot-init stands in for the real PID 1 in builder tests.
package main

func main() { println("fake ingot-init") }
