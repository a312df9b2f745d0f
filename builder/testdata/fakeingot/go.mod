module github.com/ingotdev/ingot

go 1.26
