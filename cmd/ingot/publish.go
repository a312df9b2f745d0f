package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/mgmt/release/cosignkey"
)

// registryFlags are the flags of the commands that talk to a registry.
type registryFlags struct {
	insecure bool
}

func addRegistryFlags(fs *flag.FlagSet) *registryFlags {
	r := &registryFlags{}
	fs.BoolVar(&r.insecure, "insecure", false, "allow a registry over plain HTTP (localhost and 127.0.0.1 are allowed without it)")
	return r
}

// nameOptions are the reference parsing options the flags ask for.
func (r *registryFlags) nameOptions() []name.Option {
	if r.insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// remoteOptions authenticate with docker's config.json and credential
// helpers, as the builder's pulls do.
func (r *registryFlags) remoteOptions() []remote.Option {
	return []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}
}

// password returns the key password from cosignkey.PasswordEnv.
func password() ([]byte, error) {
	pw, ok := os.LookupEnv(cosignkey.PasswordEnv)
	if !ok {
		return nil, fmt.Errorf("set %s to the key's password (it may be empty)", cosignkey.PasswordEnv)
	}
	return []byte(pw), nil
}

func runKey(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	if len(args) == 0 || args[0] != "new" {
		return usageError{"usage: ingot key new [-o PREFIX]"}
	}
	fs := newFlagSet("key new", "[-o PREFIX]", stderr)
	prefix := fs.String("o", "release", "write PREFIX.key (the encrypted private key) and PREFIX.pub")
	if err := parseArgs(fs, args[1:], 0, ""); err != nil {
		return err
	}
	pw, err := password()
	if err != nil {
		return err
	}
	k, err := cosignkey.Generate()
	if err != nil {
		return err
	}
	priv, err := cosignkey.EncryptPrivateKey(k, pw)
	if err != nil {
		return err
	}
	pub, err := release.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	privPath, pubPath := *prefix+".key", *prefix+".pub"
	// Neither file is replaced: a lost private key cannot sign the
	// update that ships its successor.
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists; remove it or choose another -o", p)
		}
	}
	if err := writeNew(privPath, priv, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pub, 0o644); err != nil {
		os.Remove(privPath)
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (private, encrypted with $%s) and %s (public: list it under update: keys:)\n", privPath, cosignkey.PasswordEnv, pubPath)
	return nil
}

// writeNew creates path, which must not exist, with data.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func runPublish(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("publish", "[-C DIR] [-target all|TARGET] [-key FILE] [flags] REGISTRY/REPO:TAG", stderr)
	dir := fs.String("C", ".", "appliance directory holding "+config.FileName)
	targetFlag := fs.String("target", "all", "target to publish, or all for every target of "+config.FileName)
	keyFile := fs.String("key", "", "sign the release with this private key (ingot key new or cosign generate-key-pair; password in $"+cosignkey.PasswordEnv+")")
	kernelDeb := fs.String("kernel", "", "Debian kernel .deb to use instead of the configured/default one")
	cacheDir := fs.String("cache", "", "cache for compiled binaries and unpacked kernels (default: the user cache dir)")
	deltaFrom := fs.String("delta-from", "auto", "release to publish patches against, for appliances that run it: REGISTRY/REPO:TAG or @sha256:…, auto (what TAG holds now) or none")
	rel := addReleaseFlag(fs)
	rf := addRegistryFlags(fs)
	if err := parseArgs(fs, args, 1, "publish needs one REGISTRY/REPO:TAG"); err != nil {
		return err
	}
	tag, err := name.NewTag(fs.Arg(0), append(rf.nameOptions(), name.StrictValidation)...)
	if err != nil {
		return usageError{fmt.Sprintf("%q: %v (publish needs a tag: REGISTRY/REPO:TAG)", fs.Arg(0), err)}
	}
	var deltaOpts []publish.Option
	switch *deltaFrom {
	case "none":
	case "auto":
		deltaOpts = append(deltaOpts, publish.WithDeltaFrom(tag))
	default:
		ref, err := name.ParseReference(*deltaFrom, append(rf.nameOptions(), name.StrictValidation)...)
		if err != nil {
			return usageError{fmt.Sprintf("-delta-from %q: %v", *deltaFrom, err)}
		}
		deltaOpts = append(deltaOpts, publish.WithDeltaFrom(ref))
	}
	cfg, err := config.Load(filepath.Join(*dir, config.FileName))
	if err != nil {
		return err
	}
	rel.apply(cfg)
	targets, err := selectTargets(cfg, *targetFlag)
	if err != nil {
		return err
	}
	// The key is read before anything is built: a wrong password fails
	// in a second, not after the build.
	var key *ecdsa.PrivateKey
	if *keyFile != "" {
		data, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		pw, err := password()
		if err != nil {
			return err
		}
		if key, err = cosignkey.DecryptPrivateKey(data, pw, *keyFile); err != nil {
			return err
		}
	}
	opts := []assemble.Option{assemble.WithProgress(stderr), assemble.WithBuilderOptions(builder.WithProgress(stderr))}
	if *kernelDeb != "" {
		opts = append(opts, assemble.WithBuilderOptions(builder.WithKernelDeb(*kernelDeb)))
	}
	if *cacheDir != "" {
		opts = append(opts, assemble.WithCacheDir(*cacheDir))
	}
	tmp, err := os.MkdirTemp("", "ingot-publish-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var images []publish.Image
	for _, target := range targets {
		path := filepath.Join(tmp, cfg.Name+"-"+string(target)+".img")
		rep, err := assemble.Image(ctx, cfg, target, path, opts...)
		if err != nil {
			return fmt.Errorf("target %s: %w", target, err)
		}
		fmt.Fprintf(stderr, "built %s build %s (root %s)\n", target, rep.BuildID, config.FormatSize(rep.RootBytes))
		images = append(images, publish.Image{Path: path, Created: rep.Created, SBOM: rep.SBOM})
	}
	popts := []publish.Option{publish.WithLog(stderr), publish.WithRemoteOptions(rf.remoteOptions()...)}
	popts = append(popts, deltaOpts...)
	res, err := publish.Push(ctx, tag, images, popts...)
	if err != nil {
		return err
	}
	signed := "unsigned"
	if key != nil {
		sigTag, err := publish.Sign(ctx, tag.Context(), res.Digest, key, popts...)
		if err != nil {
			return err
		}
		signed = "signature " + sigTag.String()
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = string(t)
	}
	fmt.Fprintf(stdout, "%s: %s release %d (%s), %.1f MB (%.1f MB uploaded, the rest already in the registry), %s\n", tag, res.Ref, cfg.Release, strings.Join(names, ", "),
		float64(res.Bytes)/1e6, float64(res.BytesUploaded)/1e6, signed)
	return nil
}

// keyFiles is a repeatable -key flag.
type keyFiles []string

func (k *keyFiles) String() string     { return strings.Join(*k, ",") }
func (k *keyFiles) Set(s string) error { *k = append(*k, s); return nil }

func runVerify(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("verify", "-key PUB [-key PUB…] [-blobs=false] REF", stderr)
	var keys keyFiles
	fs.Var(&keys, "key", "public key a signature must verify with (repeatable: any one of them)")
	blobs := fs.Bool("blobs", true, "also download every blob and check its digest")
	rf := addRegistryFlags(fs)
	if err := parseArgs(fs, args, 1, "verify needs one REF (REGISTRY/REPO:TAG or @sha256:…)"); err != nil {
		return err
	}
	if len(keys) == 0 {
		return usageError{"verify needs -key PUB"}
	}
	ref, err := name.ParseReference(fs.Arg(0), rf.nameOptions()...)
	if err != nil {
		return usageError{err.Error()}
	}
	pubs, err := release.LoadPublicKeys(keys...)
	if err != nil {
		return err
	}
	r, err := release.Verify(ctx, ref, release.Policy{Keys: pubs, AllowDowngrade: true}, rf.remoteOptions()...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s: %s release %d, signature verified\n", r.Repository, r.Digest, r.Name, r.Number)
	var errs []error
	for i := range r.Targets {
		t := &r.Targets[i]
		plan, err := r.RootPlan(t)
		if err != nil {
			errs = append(errs, err)
			fmt.Fprintf(stdout, "  %-9s build %s: ROOT REFUSED\n", t.Name, t.Config.BuildID)
			continue
		}
		line := fmt.Sprintf("  %-9s build %s, created %s, root %s in %d pieces, %d boot files", t.Name, t.Config.BuildID,
			t.Config.Created.Format("2006-01-02T15:04:05Z"), config.FormatSize(plan.Size), len(plan.Pieces), len(t.BootFiles))
		if *blobs {
			if _, err := r.VerifyBlobs(t); err != nil {
				errs = append(errs, err)
				line += ": BLOBS FAILED"
			} else {
				line += ", blobs verified"
			}
		}
		fmt.Fprintln(stdout, line)
	}
	return errors.Join(errs...)
}
