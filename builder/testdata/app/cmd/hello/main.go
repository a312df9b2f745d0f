// Command hello is a test service.
package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println("hello", os.Getenv("INGOT_SERVICE")) }
