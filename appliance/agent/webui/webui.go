// Package webui holds the files of the agent's web status page: plain
// HTML, one style sheet, one hand-written script and an icon, embedded
// into ingot-init so the page works without any internet access. The
// agent (appliance/agent, ui.go) serves them and decides who may see
// what; nothing here is a secret.
package webui

import (
	"embed"
	"io/fs"
)

//go:embed index.html login.html app.js style.css icon.svg
var files embed.FS

// Files returns the page's files by name: index.html, login.html,
// app.js, style.css, icon.svg.
func Files() fs.FS { return files }
