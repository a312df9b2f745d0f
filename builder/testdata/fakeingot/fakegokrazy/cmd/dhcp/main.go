// Command dhcp stands in for gokrazy's DHCP client in builder tests, so
// they build offline and fast.
package main

func main() {}
