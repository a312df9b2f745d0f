// Package graph orders the nodes of small directed graphs depth first and
// finds their cycles: services and the services they start after, kernel
// modules and the modules they depend on. It uses only the standard
// library, so the builder and the appliance both link it.
package graph

// Order walks the graph depth first from each root in turn, following the
// successors next returns in the order it returns them, and returns every
// node reached, each after all the nodes it leads to. A walk that comes
// back to a node on its own path stops there: Order then returns that
// cycle, the path from the node back to itself with the node at both ends.
// An error from next stops the walk and is returned as is.
func Order[N comparable](roots []N, next func(N) ([]N, error)) (order, cycle []N, err error) {
	const (
		onPath = iota + 1
		done
	)
	state := map[N]int{}
	var path []N
	var visit func(n N) ([]N, error)
	visit = func(n N) ([]N, error) {
		switch state[n] {
		case done:
			return nil, nil
		case onPath:
			i := len(path) - 1
			for path[i] != n {
				i--
			}
			return append(append([]N{}, path[i:]...), n), nil
		}
		succ, err := next(n)
		if err != nil {
			return nil, err
		}
		state[n] = onPath
		path = append(path, n)
		for _, s := range succ {
			if c, err := visit(s); c != nil || err != nil {
				return c, err
			}
		}
		path = path[:len(path)-1]
		state[n] = done
		order = append(order, n)
		return nil, nil
	}
	for _, r := range roots {
		if cycle, err = visit(r); cycle != nil || err != nil {
			return nil, cycle, err
		}
	}
	return order, nil, nil
}
