package sbom

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

var testImages = []Image{
	{Name: "web", Ref: "registry.example/team/web:1.2", Digest: "sha256:" + strings.Repeat("ab", 32), Platform: "linux/arm/v7"},
	{Name: "db", Ref: "oci-layout:/images/db@sha256:" + strings.Repeat("01", 32), Digest: "sha256:" + strings.Repeat("cd", 32), Platform: "linux/amd64"},
}

func testBinaries() []GoBinary {
	cmpMod := &debug.Module{Path: "github.com/google/go-cmp", Version: "v0.7.0"}
	return []GoBinary{
		{Name: "a_b", Path: "/usr/bin/a_b", SHA256: strings.Repeat("11", 32), Info: &debug.BuildInfo{
			GoVersion: "go1.26.8", Path: "example.com/app/cmd/ab",
			Main: debug.Module{Path: "example.com/app", Version: "(devel)"},
			Deps: []*debug.Module{
				cmpMod,
				{Path: "example.com/Old", Version: "v1.0.0", Replace: &debug.Module{Path: "example.com/fork", Version: "v1.0.1"}},
			},
		}},
		{Name: "a-b", Path: "/usr/bin/a-b", Info: &debug.BuildInfo{
			GoVersion: "go1.26.8", Path: "example.com/tool",
			Main: debug.Module{Path: "example.com/tool", Version: "v2.0.0"},
			Deps: []*debug.Module{cmpMod},
		}},
	}
}

func TestNewStructure(t *testing.T) {
	doc := New("app", 1577836800, testBinaries(), testImages)
	if doc.SPDXVersion != "SPDX-2.3" || doc.DataLicense != "CC0-1.0" || doc.SPDXID != "SPDXRef-DOCUMENT" {
		t.Errorf("New header = %q %q %q", doc.SPDXVersion, doc.DataLicense, doc.SPDXID)
	}
	if doc.CreationInfo.Created != "2020-01-01T00:00:00Z" {
		t.Errorf("New created = %q, want the epoch", doc.CreationInfo.Created)
	}
	ids := map[string]Package{}
	for _, p := range doc.Packages {
		if _, dup := ids[p.SPDXID]; dup {
			t.Errorf("SPDXID %q used twice", p.SPDXID)
		}
		ids[p.SPDXID] = p
		if !strings.HasPrefix(p.SPDXID, "SPDXRef-") || strings.Trim(p.SPDXID[8:], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != "" {
			t.Errorf("SPDXID %q has characters SPDX does not allow", p.SPDXID)
		}
		if p.DownloadLocation == "" {
			t.Errorf("package %s has no downloadLocation", p.SPDXID)
		}
	}
	rels := map[string]bool{}
	for _, r := range doc.Relationships {
		if _, ok := ids[r.Related]; !ok {
			t.Errorf("relationship %v: %s is no package", r, r.Related)
		}
		if _, ok := ids[r.Element]; !ok && r.Element != "SPDXRef-DOCUMENT" {
			t.Errorf("relationship %v: %s is no element", r, r.Element)
		}
		rels[r.Element+" "+r.Type+" "+r.Related] = true
	}
	for _, want := range []string{
		"SPDXRef-DOCUMENT DESCRIBES SPDXRef-Appliance-app",
		"SPDXRef-Appliance-app CONTAINS SPDXRef-Go-a-b",
		"SPDXRef-Appliance-app CONTAINS SPDXRef-Go-a-b-2",
		"SPDXRef-Appliance-app CONTAINS SPDXRef-OCI-web",
		"SPDXRef-Appliance-app CONTAINS SPDXRef-OCI-db",
		"SPDXRef-Go-a-b DEPENDS_ON SPDXRef-Go-module-github.com-google-go-cmp-v0.7.0",
		"SPDXRef-Go-a-b-2 DEPENDS_ON SPDXRef-Go-module-github.com-google-go-cmp-v0.7.0",
		"SPDXRef-Go-a-b DEPENDS_ON SPDXRef-Go-module-example.com-fork-v1.0.1",
		"SPDXRef-Go-a-b DEPENDS_ON SPDXRef-Go-module-stdlib-go1.26.8",
	} {
		if !rels[want] {
			t.Errorf("relationship %q missing", want)
		}
	}
	purls := map[string]bool{}
	for _, p := range doc.Packages {
		for _, r := range p.ExternalRefs {
			if r.Type != "purl" || r.Category != "PACKAGE-MANAGER" {
				t.Errorf("%s: external ref %v is not a purl", p.SPDXID, r)
			}
			purls[r.Locator] = true
		}
	}
	for _, want := range []string{
		"pkg:golang/github.com/google/go-cmp@v0.7.0",
		"pkg:golang/example.com/fork@v1.0.1",
		"pkg:golang/example.com/app",
		"pkg:golang/example.com/tool@v2.0.0",
		"pkg:golang/stdlib@go1.26.8",
		"pkg:oci/web@sha256:" + strings.Repeat("ab", 32) + "?arch=arm%2Fv7&repository_url=registry.example%2Fteam%2Fweb",
		"pkg:oci/db@sha256:" + strings.Repeat("cd", 32) + "?arch=amd64",
	} {
		if !purls[want] {
			t.Errorf("purl %q missing; have %v", want, purls)
		}
	}
	if n := strings.Count(strings.Join(keys(purls), "\n"), "go-cmp"); n != 1 {
		t.Errorf("go-cmp listed %d times, want one shared package", n)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMarshalDeterministic(t *testing.T) {
	a, err := New("app", 1, testBinaries(), testImages).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New("app", 1, testBinaries(), testImages).Marshal()
	if !bytes.Equal(a, b) {
		t.Errorf("Marshal differs between equal inputs")
	}
	c, _ := New("app", 1, testBinaries(), testImages[:1]).Marshal()
	var da, dc Document
	if err := json.Unmarshal(a, &da); err != nil {
		t.Fatalf("Marshal output is not JSON: %v", err)
	}
	json.Unmarshal(c, &dc)
	if da.DocumentNamespace == dc.DocumentNamespace || !strings.HasPrefix(da.DocumentNamespace, "https://spdx.ingot.dev/app/") {
		t.Errorf("documentNamespace = %q and %q, want distinct URIs per content", da.DocumentNamespace, dc.DocumentNamespace)
	}
	// SPDX JSON field names, as validators read them.
	for _, f := range []string{`"spdxVersion"`, `"SPDXID"`, `"documentNamespace"`, `"creationInfo"`, `"relationshipType"`, `"referenceLocator"`, `"checksumValue"`} {
		if !bytes.Contains(a, []byte(f)) {
			t.Errorf("Marshal output lacks %s", f)
		}
	}
}

func TestReadGoBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := ReadGoBinary("self", exe)
	if err != nil {
		t.Fatalf("ReadGoBinary(test binary) = %v", err)
	}
	if bin.Info.GoVersion == "" || len(bin.SHA256) != 64 {
		t.Errorf("ReadGoBinary = go %q, sha %q", bin.Info.GoVersion, bin.SHA256)
	}
	if _, err := ReadGoBinary("x", "sbom.go"); err == nil {
		t.Errorf("ReadGoBinary(not a binary) succeeded")
	}
}
