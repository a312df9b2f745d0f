// Command ingot-wifi stands in for the real Wi-Fi client in builder tests.
package main

func main() { println("fake ingot-wifi") }
