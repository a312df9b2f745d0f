package graph

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOrder(t *testing.T) {
	edges := map[string][]string{"a": {"b", "c"}, "b": {"c"}, "c": nil, "d": {"a"}}
	next := func(n string) ([]string, error) { return edges[n], nil }
	order, cycle, err := Order([]string{"a", "d"}, next)
	if err != nil || cycle != nil {
		t.Fatalf("Order(a, d) = cycle %v, error %v", cycle, err)
	}
	if want := []string{"c", "b", "a", "d"}; !cmp.Equal(order, want) {
		t.Errorf("Order(a, d) = %v, want %v", order, want)
	}

	edges["c"] = []string{"d"}
	if _, cycle, _ := Order([]string{"b"}, next); !cmp.Equal(cycle, []string{"b", "c", "d", "a", "b"}) {
		t.Errorf("Order(b) cycle = %v, want b -> c -> d -> a -> b", cycle)
	}
	if _, cycle, _ := Order([]int{0}, func(int) ([]int, error) { return []int{0}, nil }); !cmp.Equal(cycle, []int{0, 0}) {
		t.Errorf("Order(self loop) cycle = %v, want [0 0]", cycle)
	}

	bad := errors.New("no such node")
	if _, _, err := Order([]string{"x"}, func(string) ([]string, error) { return nil, bad }); err != bad {
		t.Errorf("Order(next fails) error = %v, want %v", err, bad)
	}
}
