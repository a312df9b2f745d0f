// Command world is a second test service.
package main

import "fmt"

func main() { fmt.Println("world") }
