package bls

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/slot"
)

func TestParseName(t *testing.T) {
	for name, want := range map[string]Entry{
		"ingot-1-a.conf":      {Gen: 1, Slot: slot.A},
		"ingot-12-b+1.conf":   {Gen: 12, Slot: slot.B, Counted: true, Left: 1},
		"INGOT-3-B+0-1.CONF":  {Gen: 3, Slot: slot.B, Counted: true, Left: 0, Done: 1},
		"ingot-4-a+2-10.conf": {Gen: 4, Slot: slot.A, Counted: true, Left: 2, Done: 10},
	} {
		got, ok := ParseName(name)
		if !ok || got != want {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v", name, got, ok, want)
		}
		if !strings.EqualFold(want.FileName(), name) {
			t.Errorf("%+v.FileName() = %q, want %q", want, want.FileName(), name)
		}
	}
	for _, name := range []string{"ingot-1-c.conf", "ingot-a.conf", "ingot-1-a+.conf", "ingot-1-a+1-.conf",
		"other.conf", "ingot-1-a.conf~", "ingot--a.conf", "ingot-1-a+x.conf", "ingot-1234567890-a.conf"} {
		if e, ok := ParseName(name); ok {
			t.Errorf("ParseName(%q) = %+v, want rejected", name, e)
		}
	}
}

// apply performs c on names the way the agent does.
func apply(names []string, c Changes) []string {
	var out []string
	for _, n := range names {
		keep := true
		for _, r := range c.Remove {
			keep = keep && r != n
		}
		if keep {
			out = append(out, n)
		}
	}
	for _, e := range c.Write {
		out = append(out, e.FileName())
	}
	return out
}

// boot is systemd-boot: it boots the first entry and counts a trial down.
func boot(t *testing.T, names []string) ([]string, slot.Name, bool) {
	t.Helper()
	l := List(names)
	if len(l) == 0 {
		t.Fatalf("no entry to boot in %v", names)
	}
	first := l[0]
	if first.Entry.Counted {
		next := first.Entry
		next.Left = max(0, next.Left-1)
		next.Done++
		for i, n := range names {
			if n == first.Name {
				names = append(append([]string{}, names[:i]...), names[i+1:]...)
				break
			}
		}
		names = append(names, next.FileName())
	}
	return names, first.Entry.Slot, first.Entry.Counted
}

func TestTrialLifecycle(t *testing.T) {
	names := apply(nil, Plan(nil, slot.Initial()))
	if !reflect.DeepEqual(names, []string{"ingot-1-a.conf"}) {
		t.Fatalf("initial entries %v", names)
	}
	if c := Plan(names, slot.Initial()); !c.Empty() {
		t.Fatalf("a second plan changes %+v", c)
	}
	trial, _ := slot.Initial().StartTrial(slot.B, 1)
	names = apply(names, Plan(names, trial))
	if sl, tr, _ := Default(names); sl != slot.B || !tr {
		t.Fatalf("after commit the default is %s (trial %v), want b on trial: %v", sl, tr, names)
	}
	// The firmware boots the trial once; it never confirms; the next boot
	// falls back by itself.
	names, sl, tr := boot(t, names)
	if sl != slot.B || !tr {
		t.Fatalf("first boot ran %s trial=%v", sl, tr)
	}
	if !Spent(names, slot.B) {
		t.Fatalf("Spent(b) false after the trial boot: %v", names)
	}
	// A plan for the state with the spent try keeps the spent entry out.
	spent := trial
	spent.TriesLeft = 0
	if c := Plan(names, spent); len(c.Write) != 0 || len(c.Remove) != 1 {
		t.Fatalf("plan for a spent trial: %+v", c)
	}
	_, sl, tr = boot(t, names)
	if sl != slot.A || tr {
		t.Fatalf("second boot ran %s trial=%v, want the active slot a", sl, tr)
	}
	// Confirm: b becomes active; a plan makes a newer b entry.
	confirmed, _ := trial.Confirm(slot.B)
	c := Plan(names, confirmed)
	if len(c.Write) != 1 || c.Write[0].Slot != slot.B || c.Write[0].Counted {
		t.Fatalf("confirm plan %+v", c)
	}
	// A power cut after the write, before the removals, still boots b.
	cut := apply(names, Changes{Write: c.Write})
	if sl, tr, _ := Default(cut); sl != slot.B || tr {
		t.Fatalf("after a cut confirm the default is %s trial=%v: %v", sl, tr, cut)
	}
	names = apply(names, c)
	if len(names) != 1 || !Plan(names, confirmed).Empty() {
		t.Fatalf("after confirm: %v", names)
	}
}

func TestContent(t *testing.T) {
	b, err := Content(Entry{Gen: 2, Slot: slot.B, Counted: true, Left: 1}, Params{Title: "ingot hello", Cmdline: "console=ttyS0 panic=1\n", RootPARTUUID: "X"})
	if err != nil {
		t.Fatal(err)
	}
	want := "title ingot hello (trial)\noptions console=ttyS0 panic=1 ingot.root=PARTUUID=X ingot.slot=b ingot.trial=1\ninitrd /initrd.img.b\nlinux /vmlinuz.b\n"
	if string(b) != want {
		t.Errorf("content\n%s\nwant\n%s", b, want)
	}
	if _, err := Content(Entry{Gen: 1, Slot: slot.A}, Params{Cmdline: strings.Repeat("x", 600)}); err == nil || !strings.Contains(err.Error(), "ingot-1-a.conf") {
		t.Errorf("an oversized entry: %v", err)
	}
}
