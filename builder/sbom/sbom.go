// Package sbom writes the software bill of materials of an appliance as
// an SPDX 2.3 JSON document: one package per Go program with the modules
// it was built from (read from the binary's embedded build information)
// and one package per OCI image with its resolved digest and platform.
// The document is a function of its inputs only: the creation time is the
// build's source date epoch and the namespace a hash of the content, so
// equal builds give equal bytes.
package sbom

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

// SPDX constants.
const (
	spdxVersion = "SPDX-2.3"
	dataLicense = "CC0-1.0"
	documentID  = "SPDXRef-DOCUMENT"
	noAssertion = "NOASSERTION"
	// namespaceBase prefixes documentNamespace, which SPDX wants to be a
	// unique URI; the rest is a hash of the document.
	namespaceBase = "https://spdx.ingot.dev/"
	creatorTool   = "Tool: ingot"
)

// GoBinary is a Go program in the appliance.
type GoBinary struct {
	// Name is the service name, or e.g. "ingot-init".
	Name string
	// Path is the program's path in the root filesystem.
	Path string
	// SHA256 is the hex digest of the binary.
	SHA256 string
	// Info is the binary's embedded build information.
	Info *debug.BuildInfo
}

// ReadGoBinary reads the build information of the Go program in file.
func ReadGoBinary(name, path string) (GoBinary, error) {
	f, err := os.Open(path)
	if err != nil {
		return GoBinary{}, fmt.Errorf("sbom: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return GoBinary{}, fmt.Errorf("sbom: %w", err)
	}
	return GoBinaryFrom(name, path, io.NewSectionReader(f, 0, st.Size()))
}

// GoBinaryFrom reads the build information of a Go program held in r
// (e.g. a bytes.Reader over a binary built in memory) installed at path.
func GoBinaryFrom(name, path string, r io.ReaderAt) (GoBinary, error) {
	info, err := buildinfo.Read(r)
	if err != nil {
		return GoBinary{}, fmt.Errorf("sbom: %s: %w", path, err)
	}
	h := sha256.New()
	if sr, ok := r.(interface{ Size() int64 }); ok {
		if _, err := io.Copy(h, io.NewSectionReader(r, 0, sr.Size())); err != nil {
			return GoBinary{}, fmt.Errorf("sbom: %s: %w", path, err)
		}
	}
	return GoBinary{Name: name, Path: path, SHA256: hex.EncodeToString(h.Sum(nil)), Info: info}, nil
}

// Image is an OCI image in the appliance.
type Image struct {
	// Name is the service name.
	Name string
	// Ref is the reference as configured, Digest the manifest it resolved
	// to ("sha256:..."), Platform "os/arch[/variant]".
	Ref, Digest, Platform string
}

// Document is an SPDX 2.3 document, as much of it as ingot writes.
type Document struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      CreationInfo   `json:"creationInfo"`
	DocumentDescribes []string       `json:"documentDescribes"`
	Packages          []Package      `json:"packages"`
	Relationships     []Relationship `json:"relationships"`
}

// CreationInfo says when and by what the document was made.
type CreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

// Package is an SPDX package.
type Package struct {
	Name             string        `json:"name"`
	SPDXID           string        `json:"SPDXID"`
	VersionInfo      string        `json:"versionInfo,omitempty"`
	PrimaryPurpose   string        `json:"primaryPackagePurpose,omitempty"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	Checksums        []Checksum    `json:"checksums,omitempty"`
	ExternalRefs     []ExternalRef `json:"externalRefs,omitempty"`
	Comment          string        `json:"comment,omitempty"`
}

// Checksum is a package digest.
type Checksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

// ExternalRef points at a package elsewhere, here a purl.
type ExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

// Relationship links two SPDX elements.
type Relationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// New describes the appliance name built at the Unix time epoch from
// binaries and images. The appliance is the package the document
// DESCRIBES; it CONTAINS each binary and image; each binary DEPENDS_ON
// its modules and the Go standard library.
func New(name string, epoch int64, binaries []GoBinary, images []Image) *Document {
	b := &builder{ids: map[string]bool{}, modules: map[string]string{}}
	doc := &Document{
		SPDXVersion: spdxVersion, DataLicense: dataLicense, SPDXID: documentID,
		Name: name,
		CreationInfo: CreationInfo{
			Created:  time.Unix(epoch, 0).UTC().Format(time.RFC3339),
			Creators: []string{creatorTool},
		},
	}
	appID := b.id("Appliance-" + name)
	doc.Packages = append(doc.Packages, Package{Name: name, SPDXID: appID, PrimaryPurpose: "OPERATING-SYSTEM",
		DownloadLocation: noAssertion})
	doc.DocumentDescribes = []string{appID}
	doc.Relationships = append(doc.Relationships, Relationship{documentID, "DESCRIBES", appID})

	for _, bin := range binaries {
		id := b.id("Go-" + bin.Name)
		p := Package{Name: bin.Name, SPDXID: id, PrimaryPurpose: "APPLICATION", DownloadLocation: noAssertion,
			Comment: "Go program " + bin.Path}
		if bin.SHA256 != "" {
			p.Checksums = []Checksum{{"SHA256", bin.SHA256}}
		}
		if bin.Info != nil {
			m := bin.Info.Main
			if m.Path != "" {
				p.Comment += " (" + bin.Info.Path + ")"
				p.VersionInfo = m.Version
				p.ExternalRefs = []ExternalRef{goPurl(m.Path, m.Version)}
			}
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, Relationship{appID, "CONTAINS", id})
		if bin.Info == nil {
			continue
		}
		if v := bin.Info.GoVersion; v != "" {
			sid := b.module(doc, "stdlib", v)
			doc.Relationships = append(doc.Relationships, Relationship{id, "DEPENDS_ON", sid})
		}
		deps := append([]*debug.Module(nil), bin.Info.Deps...)
		sort.Slice(deps, func(i, j int) bool { return deps[i].Path < deps[j].Path })
		for _, d := range deps {
			if d.Replace != nil {
				d = d.Replace
			}
			mid := b.module(doc, d.Path, d.Version)
			doc.Relationships = append(doc.Relationships, Relationship{id, "DEPENDS_ON", mid})
		}
	}
	for _, img := range images {
		id := b.id("OCI-" + img.Name)
		p := Package{Name: img.Ref, SPDXID: id, VersionInfo: img.Digest, PrimaryPurpose: "CONTAINER",
			DownloadLocation: noAssertion, Comment: "image of service " + img.Name + " for " + img.Platform}
		if hexDigest, ok := strings.CutPrefix(img.Digest, "sha256:"); ok {
			p.Checksums = []Checksum{{"SHA256", hexDigest}}
		}
		p.ExternalRefs = []ExternalRef{ociPurl(img)}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, Relationship{appID, "CONTAINS", id})
	}
	doc.DocumentNamespace = namespaceBase + url.PathEscape(name) + "/" + b.contentHash(doc)
	return doc
}

// Marshal returns the document as indented JSON.
func (d *Document) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	return buf.Bytes(), nil
}

type builder struct {
	ids map[string]bool
	// modules maps "path@version" to the SPDX id of its package, shared
	// between the binaries that use it.
	modules map[string]string
}

// id turns s into a unique SPDX identifier: "SPDXRef-" and letters,
// digits, '.' and '-' only, with a numeric suffix against collisions.
func (b *builder) id(s string) string {
	var sb strings.Builder
	sb.WriteString("SPDXRef-")
	for _, r := range s {
		if r < 0x80 && (r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
	}
	id := sb.String()
	for n := 2; b.ids[id]; n++ {
		id = fmt.Sprintf("%s-%d", sb.String(), n)
	}
	b.ids[id] = true
	return id
}

func (b *builder) module(doc *Document, path, version string) string {
	key := path + "@" + version
	if id, ok := b.modules[key]; ok {
		return id
	}
	id := b.id("Go-module-" + key)
	b.modules[key] = id
	p := Package{Name: path, SPDXID: id, VersionInfo: version, PrimaryPurpose: "LIBRARY", DownloadLocation: noAssertion,
		ExternalRefs: []ExternalRef{goPurl(path, version)}}
	if path != "stdlib" {
		p.DownloadLocation = "https://proxy.golang.org/" + path + "/@v/" + version + ".zip"
	}
	doc.Packages = append(doc.Packages, p)
	return id
}

// goPurl is the package URL of a Go module: pkg:golang/PATH@VERSION, each
// path segment percent-encoded.
func goPurl(path, version string) ExternalRef {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	loc := "pkg:golang/" + strings.Join(segs, "/")
	if version != "" && version != "(devel)" {
		loc += "@" + url.PathEscape(version)
	}
	return ExternalRef{"PACKAGE-MANAGER", "purl", loc}
}

// ociPurl is the package URL of an image: pkg:oci/NAME@sha256:HEX with
// the repository and platform as qualifiers (purl spec, type oci).
func ociPurl(img Image) ExternalRef {
	repo, nameOnly := repository(img.Ref)
	loc := "pkg:oci/" + url.PathEscape(strings.ToLower(nameOnly)) + "@" + img.Digest
	var q []string
	if arch := platformArch(img.Platform); arch != "" {
		q = append(q, "arch="+url.QueryEscape(arch))
	}
	if repo != "" {
		q = append(q, "repository_url="+url.QueryEscape(repo))
	}
	if len(q) > 0 {
		loc += "?" + strings.Join(q, "&")
	}
	return ExternalRef{"PACKAGE-MANAGER", "purl", loc}
}

// repository splits a reference into its repository (without tag or
// digest) and last path segment.
func repository(ref string) (repo, last string) {
	if i := strings.Index(ref, ":"); i >= 0 && (strings.HasPrefix(ref, "oci-layout:") || strings.HasPrefix(ref, "docker-archive:")) {
		p := ref[i+1:]
		if j := strings.LastIndex(p, "@"); j >= 0 {
			p = p[:j]
		}
		p = strings.TrimSuffix(strings.TrimRight(p, "/"), ".tar")
		return "", p[strings.LastIndex(p, "/")+1:]
	}
	r := ref
	if i := strings.Index(r, "@"); i >= 0 {
		r = r[:i]
	}
	if i := strings.LastIndex(r, ":"); i > strings.LastIndex(r, "/") {
		r = r[:i]
	}
	return r, r[strings.LastIndex(r, "/")+1:]
}

// platformArch is "amd64", "arm64", or "arm/v7" style without the OS.
func platformArch(p string) string {
	_, arch, _ := strings.Cut(p, "/")
	return arch
}

// contentHash digests the document before its namespace is set.
func (b *builder) contentHash(doc *Document) string {
	j, _ := json.Marshal(doc) // plain structs of strings: cannot fail
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:16])
}
