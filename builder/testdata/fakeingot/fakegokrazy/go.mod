module github.com/gokrazy/gokrazy

go 1.24
