module github.com/ingotdev/ingot

go 1.26

require github.com/gokrazy/gokrazy v0.0.0

replace github.com/gokrazy/gokrazy => ./fakegokrazy
